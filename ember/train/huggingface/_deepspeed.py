"""DeepSpeed ZeRO in ember's workers: which files each rank restores, the guards against a
DeepSpeed setting that Accelerate dropped, and a ZeRO checkpoint turned into one model.

With ZeRO, every rank writes its own partition (``zero_pp_rank_{r}_mp_rank_00_*_states.pt``)
and rank 0 also the files that every rank reads (``latest``, the trainer state, with ZeRO-1/2
the module weights in ``mp_rank_00_model_states.pt``). ``files_for_rank`` is the choice of what
rank r downloads to resume (pure, tested on its own); ``consolidate_zero_checkpoint`` gathers
every rank's partition into full weights with DeepSpeed's own ``zero_to_fp32``.

Nothing here imports deepspeed, transformers or accelerate at module level.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

from ember.train._checkpoint import Checkpoint

# A file that belongs to one rank: its ZeRO partition, its RNG state (Trainer or Accelerate).
_RANK_FILE = re.compile(
    r"(?:^|/)(?:bf16_)?zero_pp_rank_(?P<zero>\d+)_mp_rank_\d+_(?:model|optim)_states\.pt$"
    r"|(?:^|/)rng_state_(?P<rng>\d+)\.pth$"
    r"|(?:^|/)random_states_(?P<random>\d+)\.pkl$")
_OPTIM_STATES = re.compile(r"(?:^|/)(?:bf16_)?zero_pp_rank_\d+_mp_rank_\d+_optim_states\.pt$")
# Whole-model weights that the Trainer writes beside a ZeRO checkpoint (ZeRO-1/2, or ZeRO-3 with
# gather_16bit_weights_on_model_save): a DeepSpeed resume never reads them.
_MODEL_WEIGHTS = re.compile(
    r"(?:^|/)(?:model|pytorch_model)(?:-\d+-of-\d+)?\.(?:safetensors|bin)(?:\.index\.json)?$")


def file_owner(path: str) -> int | None:
    """The rank a checkpoint file belongs to (its ZeRO partition or RNG state), or ``None`` for
    a file that every rank reads."""
    match = _RANK_FILE.search(path)
    if match is None:
        return None
    return int(next(v for v in match.groups() if v is not None))


def is_zero_checkpoint(paths: Iterable[str]) -> bool:
    """Whether these checkpoint files hold DeepSpeed ZeRO partitions."""
    return any(_RANK_FILE.search(p) and "zero_pp_rank_" in p for p in paths)


def files_for_rank(files_by_rank: Mapping[int, Iterable[str]], rank: int, *,
                   elastic: bool = False) -> dict[int, list[str]]:
    """What ``rank`` downloads to resume a ZeRO checkpoint: ``{rank folder: [paths]}``.

    Its own files, and the other ranks' files that every rank reads (rank 0's ``latest``,
    trainer state, ZeRO-1/2 module weights...); a file that several ranks wrote is fetched once,
    this rank's own copy or else the lowest rank's.
    Never another rank's partition or RNG state (DeepSpeed reads only its own), except the
    optimizer partitions with ``elastic`` (``zero_optimization.elastic_checkpoint``: every rank
    reads them all), and never the whole-model weights files of another rank, which a DeepSpeed
    resume does not read.
    """
    chosen: dict[int, list[str]] = {}
    taken: set[str] = set()
    for source in sorted(files_by_rank, key=lambda r: (r != rank, r)):
        picked = []
        for path in sorted(files_by_rank[source]):
            if path in taken:
                continue
            owner = file_owner(path)
            if source == rank or owner == rank:
                wanted = True
            elif owner is None:
                wanted = not _MODEL_WEIGHTS.search(path)
            else:
                wanted = elastic and bool(_OPTIM_STATES.search(path))
            if wanted:
                picked.append(path)
                taken.add(path)
        if picked:
            chosen[source] = picked
    return chosen


def elastic_requested() -> bool:
    """(In a worker) whether the DeepSpeed config in use asks for elastic checkpoints."""
    config: Any = None
    try:
        from transformers.integrations.deepspeed import deepspeed_config

        config = deepspeed_config()
    except ImportError:
        pass
    if not config:
        try:
            from accelerate.state import AcceleratorState

            if AcceleratorState._shared_state:
                plugin = getattr(AcceleratorState(), "deepspeed_plugin", None)
                config = getattr(plugin, "deepspeed_config", None)
        except ImportError:
            pass
    zero = (config or {}).get("zero_optimization") or {}
    return bool(zero.get("elastic_checkpoint", False))


# -- the guards ----------------------------------------------------------------------------
CPU_FIX = ("On CPU workers Accelerate drops DeepSpeed when it is told to run on CPU itself "
           "(Accelerator(cpu=True) or ACCELERATE_USE_CPU=true): leave both out; ember sets up "
           "Accelerate's CPU state for DeepSpeed (TransformersTrainer, AccelerateTrainer), or "
           "in your own loop create TrainingArguments(..., use_cpu=True), or call "
           "accelerate.PartialState(cpu=True) before Accelerator(deepspeed_plugin=...)")


def check_trainer(trainer: Any) -> None:
    """Raise ``ValueError`` when a ``transformers.Trainer`` was asked for DeepSpeed
    (``TrainingArguments(deepspeed=...)``) but its Accelerator dropped it: it would train plain
    DDP, every rank holding the whole model and optimizer."""
    if not getattr(trainer.args, "deepspeed", None):
        return
    if getattr(trainer, "is_deepspeed_enabled", False):
        return
    kind = trainer.accelerator.distributed_type.name
    raise ValueError(
        f"TrainingArguments(deepspeed=...) asks for DeepSpeed ZeRO but the Trainer's Accelerator "
        f"runs distributed_type={kind!r}: DeepSpeed was dropped and the Trainer would train "
        f"plain DDP (nothing partitioned). {CPU_FIX}")


def check_accelerator(accelerator: Any, world_size: int) -> None:
    """Raise ``ValueError`` when an ``Accelerator`` inside an ember worker would not train as
    asked: DeepSpeed requested (a ``DeepSpeedPlugin``, or ``ACCELERATE_USE_DEEPSPEED``) but
    dropped, or the Accelerator blind to ember's process group (each rank alone)."""
    kind = accelerator.distributed_type.name
    wanted = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if wanted and kind != "DEEPSPEED":
        raise ValueError(
            f"DeepSpeed was asked for (a DeepSpeedPlugin, or an accelerate_config naming "
            f"DEEPSPEED) but the Accelerator runs distributed_type={kind!r}: DeepSpeed was "
            f"dropped and it would train plain DDP (nothing partitioned). {CPU_FIX}")
    if world_size > 1 and accelerator.num_processes != world_size:
        raise ValueError(
            f"the Accelerator sees {accelerator.num_processes} process(es) but ember runs "
            f"{world_size} workers: each rank would train alone, on its own data, and the "
            "models would drift apart. On CPU workers, call accelerate.PartialState(cpu=True) "
            "before creating the Accelerator, or create a transformers.Trainer's "
            "TrainingArguments(..., use_cpu=True) (AccelerateTrainer and TransformersTrainer do "
            "this for you)")


def check_partitions_kept(folder: str) -> None:
    """(In a worker, before reporting ``folder``) raise ``ValueError`` when ``folder`` holds a
    ZeRO partition but the run keeps only rank 0's checkpoint files
    (``CheckpointConfig(keep_all_ranks=False)``): the other ranks' partitions would be lost and
    the checkpoint could never be resumed or consolidated."""
    from ember.train._session import current_session

    session = current_session("report")
    if session.keep_all_ranks or session.context.world_size < 2:
        return
    paths = [os.path.relpath(os.path.join(parent, name), folder).replace(os.sep, "/")
             for parent, _dirs, names in os.walk(folder) for name in names]
    if is_zero_checkpoint(paths):
        raise ValueError(
            "this checkpoint holds DeepSpeed ZeRO partitions, one per rank, but "
            "CheckpointConfig(keep_all_ranks=False) keeps rank 0's files only: the other ranks' "
            "partitions would be lost and the checkpoint could not be resumed. Set "
            "CheckpointConfig(keep_all_ranks=True) (the default; Ray 2.5: "
            "_checkpoint_keep_all_ranks=True)")


# -- consolidation --------------------------------------------------------------------------
def consolidate_zero_checkpoint(checkpoint: Checkpoint | str, output_dir: str, *,
                                model: Any = None) -> str:
    """Gather a stored DeepSpeed ZeRO checkpoint (every rank's partition) into one Hugging Face
    model folder that ``from_pretrained`` loads, for generation, batch inference and serving.

    ``checkpoint`` is a committed ember checkpoint (``result.checkpoint``), a ``Checkpoint`` of
    a local folder, or a folder's path. Every rank's files are fetched, DeepSpeed's
    ``get_fp32_state_dict_from_zero_checkpoint`` rebuilds the full fp32 weights, and they are
    saved with ``save_pretrained`` into ``output_dir`` (``model.safetensors`` and
    ``config.json``; tokenizer files found beside the checkpoint are copied too). The model
    comes from the ``config.json`` that the ``transformers.Trainer`` saved with the checkpoint;
    for a checkpoint without one (``accelerator.save_state``), pass ``model=``, a model of the
    same architecture (e.g. built from its config), whose weights are replaced. Needs
    ``deepspeed`` and ``transformers`` where it runs. Returns ``output_dir``::

        folder = consolidate_zero_checkpoint(result.checkpoint, "/tmp/gpt2")
        model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    """
    from ember.train.huggingface._files import download_merged

    if isinstance(checkpoint, str):
        checkpoint = Checkpoint(checkpoint)
    with tempfile.TemporaryDirectory(prefix="ember-zero-") as merged:
        download_merged(checkpoint, merged)
        folder = _zero_folder(merged, checkpoint)
        state_dict = _fp32_state_dict(folder)
        if model is None:
            model = _model_from_config(folder, checkpoint)
        _load_weights(model, state_dict)
        os.makedirs(output_dir, exist_ok=True)
        model.save_pretrained(output_dir)
        for name in sorted(os.listdir(folder)):
            if name.startswith(("tokenizer", "vocab", "merges", "special_tokens", "added_tokens")):
                shutil.copy2(os.path.join(folder, name), os.path.join(output_dir, name))
    return output_dir


def _zero_folder(root: str, checkpoint: Checkpoint) -> str:
    """The folder DeepSpeed saved into: it holds ``latest``, naming a folder beside it."""
    found = []
    for parent, _dirs, names in os.walk(root):
        if "latest" in names:
            with open(os.path.join(parent, "latest")) as f:
                tag = f.read().strip()
            if os.path.isdir(os.path.join(parent, tag)):
                found.append(parent)
    if len(found) == 1:
        return found[0]
    where = [os.path.relpath(p, root) for p in found]
    raise ValueError(
        f"checkpoint {checkpoint.path!r} holds {len(found)} DeepSpeed checkpoint folders "
        f"({where}): consolidate_zero_checkpoint needs exactly one folder with a 'latest' file "
        "and the ZeRO partitions it names (saved with DeepSpeed ZeRO through the Trainer or "
        "accelerator.save_state)")


def _fp32_state_dict(folder: str) -> dict[str, Any]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state_dict: dict[str, Any] = get_fp32_state_dict_from_zero_checkpoint(folder)
    return state_dict


def _model_from_config(folder: str, checkpoint: Checkpoint) -> Any:
    import transformers

    if not os.path.exists(os.path.join(folder, "config.json")):
        raise ValueError(
            f"checkpoint {checkpoint.path!r} has no config.json beside its DeepSpeed folder, so "
            "the model to fill is unknown: pass consolidate_zero_checkpoint(..., model=<a model "
            "of the same architecture>)")
    config = transformers.AutoConfig.from_pretrained(folder)
    architecture = (config.architectures or [None])[0]
    model_class = getattr(transformers, architecture, None) if architecture else None
    if model_class is None:
        raise ValueError(
            f"config.json of checkpoint {checkpoint.path!r} names architectures="
            f"{config.architectures!r}, which transformers does not have: pass "
            "consolidate_zero_checkpoint(..., model=<a model of the same architecture>)")
    return model_class(config)


def _load_weights(model: Any, state_dict: dict[str, Any]) -> None:
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(
            f"the ZeRO checkpoint does not fit {type(model).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; pass the model it was trained with")
