"""``TransformersTrainer`` and the helpers for a Hugging Face ``Trainer`` inside ``TorchTrainer``.

Nothing here imports transformers or accelerate at module level: they are imported inside the
workers, when a Trainer is prepared.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from ember.train._checkpoint import Checkpoint
from ember.train._config_classes import RunConfig, ScalingConfig
from ember.train._session import current_session, get_checkpoint, get_context
from ember.train._trainer import TorchTrainer, restore_wrapped
from ember.train.huggingface._files import download_for_rank

DATASET_KEYS = ("train", "evaluation")


def prepare_trainer(trainer: Any) -> Any:
    """Make a ``transformers.Trainer`` built inside an ember worker train as ember intends.

    - It checks that the Trainer is really distributed: on CPU workers, ``TrainingArguments``
      need ``use_cpu=True`` (or, without DeepSpeed, ``ACCELERATE_USE_CPU=true`` in the
      environment), else Accelerate ignores the process group and every rank trains alone
      (``ValueError``).
    - DeepSpeed (``TrainingArguments(deepspeed=...)``) must have reached the Trainer's
      Accelerator: Accelerate drops it without a word under ``ACCELERATE_USE_CPU`` and trains
      plain DDP, which raises ``ValueError`` here instead. On CPU workers DeepSpeed runs over
      gloo with ``use_cpu=True``; on GPU workers over nccl.
    - Its ``args.output_dir`` becomes ``{output_dir}/rank_{rank}``: each rank writes its own
      checkpoint folders, so each uploads exactly what it wrote.
    - FSDP on CPU workers: Accelerate drops the FSDP plugin on CPU and trains plain DDP.
      With FSDP2 (``fsdp_config={"fsdp_version": 2}``) ember switches FSDP on (``fully_shard``
      shards on CPU with gloo); with FSDP1 it raises ``ValueError`` rather than train unsharded.
    - Datasets that are ember shards (``TransformersTrainer`` passes them) get a plain
      ``DataLoader``: they are this rank's share already and must not be split again.

    Returns ``trainer``. Call it before ``trainer.train()``, inside ``train_loop_per_worker``::

        def train_loop(config):
            args = transformers.TrainingArguments(output_dir="out", use_cpu=True, ...)
            trainer = prepare_trainer(transformers.Trainer(model, args, ...))
            trainer.add_callback(EmberReportCallback())
            trainer.train(resume_from_checkpoint=get_resume_checkpoint())
    """
    import transformers

    if not isinstance(trainer, transformers.Trainer):
        raise TypeError(f"prepare_trainer() takes a transformers.Trainer, got "
                        f"{type(trainer).__name__}")
    from ember.train.huggingface import _deepspeed

    context = get_context()
    _check_distributed(trainer, context.get_world_size())
    _deepspeed.check_trainer(trainer)
    suffix = f"rank_{context.get_world_rank()}"
    output_dir = str(trainer.args.output_dir or "trainer_output")
    if os.path.basename(os.path.normpath(output_dir)) != suffix:
        trainer.args.output_dir = os.path.join(output_dir, suffix)
    _enable_fsdp_on_cpu(trainer)
    _use_plain_loaders(trainer)
    return trainer


def get_resume_checkpoint(directory: str | None = None) -> str | None:
    """The Hugging Face checkpoint folder (``.../checkpoint-{step}``) to pass to
    ``trainer.train(resume_from_checkpoint=...)``, or ``None`` at a fresh start.

    Downloads every rank's part of the checkpoint that ``ember.train.get_checkpoint()`` returns
    and merges them into ``directory`` (default: a new temporary folder; delete it after
    ``train()``): Hugging Face reads rank 0's trainer state and each rank's shard from one folder.
    With DeepSpeed ZeRO, the other ranks' partitions are left out (each rank reads only its own).
    """
    checkpoint = get_checkpoint()
    if checkpoint is None:
        return None
    target = directory or tempfile.mkdtemp(prefix="ember-hf-resume-")
    download_for_rank(checkpoint, target, get_context().get_world_rank())
    if os.path.exists(os.path.join(target, "trainer_state.json")):
        return target  # resume_from_checkpoint named a Hugging Face checkpoint folder itself
    found = sorted((n for n in os.listdir(target) if n.startswith("checkpoint-")
                    and os.path.isdir(os.path.join(target, n))),
                   key=lambda n: int(n.rsplit("-", 1)[1]) if n.rsplit("-", 1)[1].isdigit() else -1)
    if not found:
        raise ValueError(
            f"checkpoint {checkpoint.path!r} holds no Hugging Face 'checkpoint-<step>' folder "
            f"(found: {sorted(os.listdir(target))}); resume from a checkpoint that "
            "EmberReportCallback reported, or pass none")
    return os.path.join(target, found[-1])


class TransformersTrainer(TorchTrainer):
    """Train a Hugging Face ``transformers.Trainer`` on ``scaling_config.num_workers`` workers.

    ::

        def trainer_init_per_worker(train_dataset, eval_dataset, **config):
            model = transformers.GPT2LMHeadModel(transformers.GPT2Config(...))
            args = transformers.TrainingArguments(output_dir="out", max_steps=20,
                                                  save_steps=10, logging_steps=5)
            return transformers.Trainer(model=model, args=args, train_dataset=train_dataset,
                                        eval_dataset=eval_dataset)

        result = TransformersTrainer(
            trainer_init_per_worker, trainer_init_config={},
            scaling_config=ScalingConfig(num_workers=2),
            run_config=RunConfig(storage_path="s3://bucket/runs"),
            datasets={"train": ember.data.from_items(rows)}).fit()

    Each worker calls ``trainer_init_per_worker(train_dataset, eval_dataset, **config)`` with its
    shards of ``datasets["train"]`` and ``datasets["evaluation"]`` (torch ``IterableDataset``
    s, or ``None``; set ``max_steps``, they have no length), then ``prepare_trainer`` and
    ``trainer.train()``. On CPU workers every ``TrainingArguments`` built there gets
    ``use_cpu=True``, so that DDP and DeepSpeed ZeRO (``TrainingArguments(deepspeed=...)``,
    over gloo) both span all workers; on GPU workers DeepSpeed runs over nccl. Checkpoints are
    written to a temporary folder on each worker (the ``output_dir`` the Trainer was given is
    replaced) and uploaded by ``EmberReportCallback``:
    every Hugging Face save is one ember checkpoint, each rank's files in its ``rank_{r}/``
    folder. After a failure, or with ``resume_from_checkpoint``, each worker downloads and
    merges that checkpoint and calls ``trainer.train(resume_from_checkpoint=<folder>)``.
    ``preprocessor`` (Ray 2.5's) is fit on ``datasets["train"]`` and applied to both datasets
    before they are split, as in ``TorchTrainer``.
    """

    def __init__(
        self,
        trainer_init_per_worker: Callable[..., Any],
        *,
        trainer_init_config: dict[str, Any] | None = None,
        scaling_config: ScalingConfig,
        run_config: RunConfig | None = None,
        datasets: dict[str, Any] | None = None,
        resume_from_checkpoint: Checkpoint | None = None,
        preprocessor: Any = None,
    ) -> None:
        if not callable(trainer_init_per_worker):
            raise TypeError("trainer_init_per_worker must be a function (train_dataset, "
                            "eval_dataset, **config) -> transformers.Trainer, got "
                            f"{type(trainer_init_per_worker).__name__}")
        unknown = sorted(set(datasets or {}) - set(DATASET_KEYS))
        if unknown:
            raise ValueError(f"TransformersTrainer(datasets=...) has key(s) {unknown}; it takes "
                             f"{list(DATASET_KEYS)} (the Trainer's train and eval datasets)")
        super().__init__(
            _transformers_loop,
            train_loop_config={"trainer_init_per_worker": trainer_init_per_worker,
                               "trainer_init_config": dict(trainer_init_config or {})},
            scaling_config=scaling_config, run_config=run_config, datasets=datasets,
            resume_from_checkpoint=resume_from_checkpoint, preprocessor=preprocessor)

    @classmethod
    def restore(cls, path: str, *, train_loop_per_worker: Callable[..., Any] | None = None,
                train_loop_config: dict[str, Any] | None = None,
                datasets: dict[str, Any] | None = None,
                preprocessor: Any = None) -> TorchTrainer:
        """A trainer that resumes the run in ``path`` (whose driver died) from its latest
        committed checkpoint (see ``TorchTrainer.restore``). ``train_loop_per_worker`` and
        ``train_loop_config`` here replace the saved ``trainer_init_per_worker`` and
        ``trainer_init_config``."""
        return restore_wrapped(path, datasets, {
            "trainer_init_per_worker": train_loop_per_worker,
            "trainer_init_config": None if train_loop_config is None else dict(train_loop_config),
        }, preprocessor)


def _transformers_loop(config: dict[str, Any]) -> None:
    """(In each worker) build the Trainer, prepare it, resume it if there is a checkpoint, and
    train."""
    from ember.train.huggingface._data import ShardDataset

    shards = current_session("get_dataset_shard").dataset_shards
    datasets = [ShardDataset(shards[k], k) if k in shards else None for k in DATASET_KEYS]
    with _cpu_training_arguments(not get_context().use_gpu):
        trainer = config["trainer_init_per_worker"](*datasets, **config["trainer_init_config"])
    import transformers

    from ember.train.huggingface._callback import EmberReportCallback

    if not isinstance(trainer, transformers.Trainer):
        raise TypeError("trainer_init_per_worker must return a transformers.Trainer, got "
                        f"{type(trainer).__name__}")
    workdir = tempfile.mkdtemp(prefix="ember-hf-")
    try:
        unused = str(trainer.args.output_dir or "")
        trainer.args.output_dir = os.path.join(workdir, "output")
        with contextlib.suppress(OSError):  # the Trainer made it, empty; it stays unused
            os.rmdir(unused)
        prepare_trainer(trainer)
        if not any(isinstance(cb, EmberReportCallback)
                   for cb in trainer.callback_handler.callbacks):
            trainer.add_callback(EmberReportCallback())
        resume = get_resume_checkpoint(os.path.join(workdir, "resume"))
        trainer.train(resume_from_checkpoint=resume)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def _cpu_training_arguments(on_cpu: bool) -> Iterator[None]:
    """While the user's factory runs on a CPU worker, every ``TrainingArguments`` it creates gets
    ``use_cpu=True``.

    Accelerate ignores the process group of CPU workers unless told they are CPU workers. Its
    environment switch (``ACCELERATE_USE_CPU``) also reaches the Trainer's ``Accelerator``, which
    then drops DeepSpeed without a word and trains plain DDP; ``use_cpu=True`` reaches only the
    device set-up, which is what both DDP and DeepSpeed need."""
    if not on_cpu:
        yield
        return
    import transformers

    cls = transformers.TrainingArguments
    original: Callable[[Any], None] = cls.__post_init__

    def post_init(self: Any) -> None:
        self.use_cpu = True
        original(self)

    cls.__post_init__ = post_init  # type: ignore[method-assign]
    try:
        yield
    finally:
        cls.__post_init__ = original  # type: ignore[method-assign]


def _check_distributed(trainer: Any, world_size: int) -> None:
    """On CPU workers, ``TrainingArguments`` without ``use_cpu=True`` (or the environment
    variable ``ACCELERATE_USE_CPU``) makes Accelerate ignore the process group: every rank
    would train alone, on its own data, and the models would drift apart."""
    if world_size < 2:
        return
    from transformers.training_args import ParallelMode

    if trainer.args.parallel_mode != ParallelMode.DISTRIBUTED:
        raise ValueError(
            f"the Trainer is not distributed (parallel_mode={trainer.args.parallel_mode.name}) "
            f"although {world_size} workers run it: each would train alone. On CPU workers, "
            "create TrainingArguments(..., use_cpu=True) (the TransformersTrainer does this "
            "for you)")


def _enable_fsdp_on_cpu(trainer: Any) -> None:
    from ember.train.huggingface import _fsdp

    plugin_args = getattr(trainer.args, "fsdp_plugin_args", None)
    state = trainer.accelerator.state
    plan = _fsdp.fsdp_plan(requested=plugin_args is not None,
                           version=(plugin_args or {}).get("fsdp_version", 1),
                           distributed_type=state.distributed_type.name)
    if plan != "promote":
        return
    from accelerate.utils import FullyShardedDataParallelPlugin

    assert plugin_args is not None
    _fsdp.promote(state, FullyShardedDataParallelPlugin(**plugin_args))
    trainer.is_fsdp_enabled = True
    # the checks Trainer.create_accelerator_and_postprocess makes for FSDP
    if trainer.args.save_only_model and "SHARDED_STATE_DICT" in str(
            state.fsdp_plugin.state_dict_type):
        raise ValueError("TrainingArguments(save_only_model=True) cannot save FSDP "
                         "SHARDED_STATE_DICT checkpoints; drop save_only_model or use "
                         "FULL_STATE_DICT")


def _use_plain_loaders(trainer: Any) -> None:
    from torch.utils.data import DataLoader

    from ember.train.huggingface._data import ShardDataset

    def loader(dataset: ShardDataset, batch_size: int) -> DataLoader[Any]:
        return DataLoader(dataset, batch_size=batch_size, collate_fn=trainer.data_collator,
                          num_workers=0)

    if isinstance(trainer.train_dataset, ShardDataset):
        train = trainer.train_dataset
        trainer.get_train_dataloader = lambda: loader(train, trainer.args.per_device_train_batch_size)
    if isinstance(trainer.eval_dataset, ShardDataset):
        default_eval = trainer.eval_dataset
        original = trainer.get_eval_dataloader

        def get_eval_dataloader(eval_dataset: Any = None) -> Any:
            dataset = default_eval if eval_dataset is None else eval_dataset
            if isinstance(dataset, ShardDataset):
                return loader(dataset, trainer.args.per_device_eval_batch_size)
            return original(eval_dataset)

        trainer.get_eval_dataloader = get_eval_dataloader
