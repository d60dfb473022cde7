"""``AccelerateTrainer``: an Accelerate training loop on ember workers, without ``accelerate
launch``.

``accelerate launch`` does two things: it starts the processes (ember's workers do that, and
join them in ``torch.distributed``) and it passes the config file to them as environment
variables (``ACCELERATE_USE_FSDP``, ``FSDP_VERSION``, ``ACCELERATE_USE_DEEPSPEED``,
``ACCELERATE_MIXED_PRECISION``...), which ``Accelerator()`` reads. ``accelerate_env`` turns a
config (the ``accelerate config`` file's format) into those variables; each worker sets them
before the loop runs.

CPU workers are not told so through ``ACCELERATE_USE_CPU`` (Accelerate would drop DeepSpeed
under it): each worker creates Accelerate's shared state for CPU itself
(``PartialState(cpu=True)``), which DDP, FSDP2 and DeepSpeed ZeRO (over gloo) all build on.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ember.train._checkpoint import Checkpoint
from ember.train._config_classes import RunConfig, ScalingConfig
from ember.train._session import get_checkpoint, get_context, report
from ember.train._trainer import TorchTrainer, check_loop_and_scaling, restore_wrapped
from ember.train.huggingface import _deepspeed
from ember.train.huggingface._files import download_for_rank

DISTRIBUTED_TYPES = ("NO", "MULTI_CPU", "MULTI_GPU", "FSDP", "DEEPSPEED")
# Keys of an `accelerate config` file that describe the launch: ember's workers replace it.
LAUNCH_KEYS = frozenset({
    "compute_environment", "debug", "downcast_bf16", "enable_cpu_affinity", "gpu_ids",
    "machine_rank", "main_process_ip", "main_process_port", "main_training_function",
    "num_machines", "num_processes", "rdzv_backend", "same_network", "tpu_env",
    "tpu_use_cluster", "tpu_use_sudo", "use_cpu",
})
FSDP_ENV_NAMES = {"transformer_layer_cls_to_wrap": "FSDP_TRANSFORMER_CLS_TO_WRAP"}
# An `accelerate config` file's deepspeed_config keys, and the variables `accelerate launch`
# sets for them.
DEEPSPEED_ENV_NAMES = {
    "zero_stage": "ACCELERATE_DEEPSPEED_ZERO_STAGE",
    "gradient_accumulation_steps": "ACCELERATE_GRADIENT_ACCUMULATION_STEPS",
    "gradient_clipping": "ACCELERATE_GRADIENT_CLIPPING",
    "offload_optimizer_device": "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE",
    "offload_param_device": "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE",
    "offload_optimizer_nvme_path": "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_NVME_PATH",
    "offload_param_nvme_path": "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_NVME_PATH",
    "zero3_init_flag": "ACCELERATE_DEEPSPEED_ZERO3_INIT",
    "zero3_save_16bit_model": "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL",
    "deepspeed_config_file": "ACCELERATE_DEEPSPEED_CONFIG_FILE",
    "deepspeed_moe_layer_cls_names": "ACCELERATE_DEEPSPEED_MOE_LAYER_CLS_NAMES",
}
# deepspeed_config keys about launching (hostfiles, multi-node launchers): ember's workers do it.
DEEPSPEED_LAUNCH_KEYS = frozenset({
    "deepspeed_hostfile", "deepspeed_multinode_launcher", "deepspeed_exclusion_filter",
    "deepspeed_inclusion_filter",
})


def accelerate_env(config: Mapping[str, Any] | str | None, *, use_gpu: bool) -> dict[str, str]:
    """The environment variables that ``accelerate launch`` would set for ``config``.

    ``config`` is a dict in the format of an ``accelerate config`` file, or the path of such a
    YAML/JSON file: ``distributed_type`` (``"NO"``, ``"MULTI_CPU"``, ``"MULTI_GPU"``,
    ``"FSDP"`` or ``"DEEPSPEED"``; ``fsdp_config`` alone implies ``"FSDP"``, ``deepspeed_config``
    alone ``"DEEPSPEED"``), ``mixed_precision``, ``gradient_accumulation_steps``, ``fsdp_config``
    (``fsdp_version``, ``fsdp_state_dict_type``, ``fsdp_auto_wrap_policy``,
    ``fsdp_transformer_layer_cls_to_wrap``, ``fsdp_reshard_after_forward``...) and
    ``deepspeed_config`` (``zero_stage``, ``offload_optimizer_device``, ``offload_param_device``,
    ``gradient_clipping``, ``zero3_init_flag``, ``zero3_save_16bit_model``,
    ``deepspeed_config_file``...). The launch keys (``num_processes``, ``main_process_port``,
    ``deepspeed_hostfile``...) are ignored: ember starts the processes. On CPU workers
    (``use_gpu=False``) ``ACCELERATE_USE_CPU`` is left out: it would make Accelerate drop
    DeepSpeed; ember's workers set up Accelerate's CPU state themselves.

    >>> accelerate_env({"fsdp_config": {"fsdp_version": 2}}, use_gpu=False)["FSDP_VERSION"]
    '2'
    """
    if isinstance(config, str):
        config = _read_config_file(config)
    config = dict(config or {})
    fsdp_config = config.pop("fsdp_config", None) or {}
    if not isinstance(fsdp_config, Mapping):
        raise ValueError(f"accelerate_config['fsdp_config']={fsdp_config!r} must be a dict of "
                         "fsdp_* settings")
    deepspeed_config = config.pop("deepspeed_config", None) or {}
    if not isinstance(deepspeed_config, Mapping):
        raise ValueError(f"accelerate_config['deepspeed_config']={deepspeed_config!r} must be a "
                         "dict of DeepSpeed settings (zero_stage, offload_optimizer_device...)")
    implied = "FSDP" if fsdp_config else "DEEPSPEED" if deepspeed_config else "MULTI_CPU"
    kind = str(config.pop("distributed_type", implied)).upper()
    if kind not in DISTRIBUTED_TYPES:
        raise ValueError(f"accelerate_config distributed_type={kind!r} is not supported by the "
                         f"AccelerateTrainer (supported: {', '.join(DISTRIBUTED_TYPES)})")
    if fsdp_config and kind != "FSDP":
        raise ValueError(f"accelerate_config has an fsdp_config but distributed_type={kind!r}; "
                         "set distributed_type='FSDP' or drop fsdp_config")
    if deepspeed_config and kind != "DEEPSPEED":
        raise ValueError(f"accelerate_config has a deepspeed_config but distributed_type="
                         f"{kind!r}; set distributed_type='DEEPSPEED' or drop deepspeed_config")
    env = {"ACCELERATE_USE_CPU": "false"} if use_gpu else {}
    if kind == "MULTI_GPU" and not use_gpu:
        raise ValueError("accelerate_config distributed_type='MULTI_GPU' needs GPU workers: "
                         "pass ScalingConfig(use_gpu=True), or use 'MULTI_CPU'")
    mixed_precision = config.pop("mixed_precision", None)
    if mixed_precision is not None:
        env["ACCELERATE_MIXED_PRECISION"] = str(mixed_precision)
    steps = config.pop("gradient_accumulation_steps", None)
    if steps is not None:
        env["ACCELERATE_GRADIENT_ACCUMULATION_STEPS"] = str(int(steps))
    unknown = sorted(set(config) - LAUNCH_KEYS)
    if unknown:
        raise ValueError(f"accelerate_config has unsupported key(s) {unknown}; supported: "
                         "distributed_type, mixed_precision, gradient_accumulation_steps, "
                         "fsdp_config (and the launch keys, which are ignored)")
    if kind == "FSDP":
        env["ACCELERATE_USE_FSDP"] = "true"
        for key, value in fsdp_config.items():
            if not key.startswith("fsdp_"):
                raise ValueError(f"accelerate_config['fsdp_config'] key {key!r} must start "
                                 "with 'fsdp_' (e.g. 'fsdp_version')")
            name = FSDP_ENV_NAMES.get(key[5:], "FSDP_" + key[5:].upper())
            env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    if kind == "DEEPSPEED":
        env.update(_deepspeed_env(deepspeed_config, mixed_precision is not None))
    return env


def _deepspeed_env(config: Mapping[str, Any], mixed_precision_set: bool) -> dict[str, str]:
    env = {"ACCELERATE_USE_DEEPSPEED": "true"}
    unknown = sorted(set(config) - set(DEEPSPEED_ENV_NAMES) - DEEPSPEED_LAUNCH_KEYS)
    if unknown:
        raise ValueError(f"accelerate_config['deepspeed_config'] has unsupported key(s) "
                         f"{unknown}; supported: {', '.join(DEEPSPEED_ENV_NAMES)}")
    for key, value in config.items():
        if key in DEEPSPEED_ENV_NAMES:
            env[DEEPSPEED_ENV_NAMES[key]] = (str(value).lower() if isinstance(value, bool)
                                             else str(value))
    # What Accelerate's DeepSpeedPlugin checks against a deepspeed_config_file (the settings
    # that the file must hold instead), as `accelerate launch` passes it.
    fields = list(config) + (["mixed_precision"] if mixed_precision_set else [])
    env["ACCELERATE_CONFIG_DS_FIELDS"] = ",".join(fields).lower()
    return env


def _read_config_file(path: str) -> dict[str, Any]:
    import yaml

    with open(path) as f:
        loaded = yaml.safe_load(f)
    if not isinstance(loaded, dict):
        raise ValueError(f"accelerate config file {path!r} does not hold a mapping of settings")
    return loaded


class AccelerateTrainer(TorchTrainer):
    """Run an Accelerate training loop on ``scaling_config.num_workers`` workers.

    ::

        def train_loop(config):
            accelerator = Accelerator()          # configured from accelerate_config
            model, optimizer = accelerator.prepare(build_model(), build_optimizer())
            start = (restore_state(accelerator) or {}).get("step", -1) + 1
            for step in range(start, config["steps"]):
                ...
                report_state(accelerator, {"step": step, "loss": loss.item()})

        AccelerateTrainer(train_loop, train_loop_config={"steps": 10},
                          accelerate_config={"fsdp_config": {"fsdp_version": 2,
                                             "fsdp_state_dict_type": "SHARDED_STATE_DICT"}},
                          scaling_config=ScalingConfig(num_workers=2)).fit()

    Each worker sets ``accelerate_env(accelerate_config)`` in its environment before the loop
    runs; the loop's ``Accelerator()`` reads it (configure FSDP there, not with an
    ``Accelerator(fsdp_plugin=...)`` argument). On CPU workers, FSDP2 is switched on (Accelerate
    would drop it and train DDP) and FSDP1 refused. ``preprocessor`` (Ray 2.5's) prepares
    ``datasets`` as in ``TorchTrainer``.

    DeepSpeed ZeRO runs on CPU workers (gloo) and GPU workers (nccl) alike: name it in
    ``accelerate_config`` (``{"deepspeed_config": {"zero_stage": 3}}``) or pass
    ``Accelerator(deepspeed_plugin=DeepSpeedPlugin(...))`` in the loop. Every ``Accelerator``
    the loop creates is checked at once: one that dropped DeepSpeed (``Accelerator(cpu=True)``,
    ``ACCELERATE_USE_CPU``) or that does not see all of ember's workers raises ``ValueError``
    instead of training plain DDP or every rank alone.
    """

    def __init__(
        self,
        train_loop_per_worker: Callable[..., Any],
        *,
        accelerate_config: Mapping[str, Any] | str | None = None,
        train_loop_config: dict[str, Any] | None = None,
        scaling_config: ScalingConfig,
        run_config: RunConfig | None = None,
        datasets: dict[str, Any] | None = None,
        resume_from_checkpoint: Checkpoint | None = None,
        preprocessor: Any = None,
    ) -> None:
        check_loop_and_scaling(train_loop_per_worker, scaling_config)  # before the wrapping
        env = accelerate_env(accelerate_config, use_gpu=scaling_config.use_gpu)  # fail early
        super().__init__(
            _accelerate_loop,
            train_loop_config={"train_loop_per_worker": train_loop_per_worker, "env": env,
                               "config": train_loop_config},
            scaling_config=scaling_config, run_config=run_config, datasets=datasets,
            resume_from_checkpoint=resume_from_checkpoint, preprocessor=preprocessor)

    @classmethod
    def restore(cls, path: str, *, train_loop_per_worker: Callable[..., Any] | None = None,
                train_loop_config: dict[str, Any] | None = None,
                datasets: dict[str, Any] | None = None,
                preprocessor: Any = None) -> TorchTrainer:
        """A trainer that resumes the run in ``path`` (whose driver died) from its latest
        committed checkpoint (see ``TorchTrainer.restore``); a loop or config given here
        replaces the saved one."""
        return restore_wrapped(path, datasets, {"train_loop_per_worker": train_loop_per_worker,
                                                "config": train_loop_config}, preprocessor)


def _accelerate_loop(config: dict[str, Any]) -> None:
    """(In each worker) set Accelerate's environment and its CPU state (FSDP2 switched on when
    asked), then run the user's loop, checking every Accelerator it creates."""
    env: dict[str, str] = config["env"]
    os.environ.update(env)
    context = get_context()
    if not context.use_gpu:
        if env.get("ACCELERATE_USE_FSDP") == "true":
            _enable_fsdp_on_cpu()
        else:
            from accelerate.state import PartialState

            PartialState(cpu=True)  # joins ember's gloo group; DDP and DeepSpeed build on it
    fn = config["train_loop_per_worker"]
    takes_config = len(inspect.signature(fn).parameters) > 0
    with _checked_accelerators(context.get_world_size()):
        fn(config["config"] or {}) if takes_config else fn()


@contextlib.contextmanager
def _checked_accelerators(world_size: int) -> Iterator[None]:
    """Check each ``Accelerator`` as soon as the loop creates it (``_deepspeed.check_accelerator``):
    a dropped DeepSpeed plugin must fail at the line that dropped it, not after training."""
    from accelerate import Accelerator

    original = Accelerator.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        _deepspeed.check_accelerator(self, world_size)
        _check_fsdp(self)

    Accelerator.__init__ = init
    try:
        yield
    finally:
        Accelerator.__init__ = original


def _enable_fsdp_on_cpu() -> None:
    """Create Accelerate's (singleton) state now, from the environment, and switch it to FSDP:
    the loop's ``Accelerator()`` then finds it initialized and uses it as it is (an
    ``Accelerator`` keeps no FSDP setting of its own: it reads ``state.fsdp_plugin``)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import FullyShardedDataParallelPlugin

    from ember.train.huggingface import _fsdp

    # Accelerate's own default is FSDP1, whose plugin cannot even be built without a GPU:
    # decide before building it, with a message that says what to do.
    version = int(os.environ.get("FSDP_VERSION", "1"))
    _fsdp.fsdp_plan(requested=True, version=version, distributed_type="MULTI_CPU")
    plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables
    Accelerator(cpu=True, fsdp_plugin=plugin)  # sets up the shared state as the loop's would
    state = AcceleratorState()
    plan = _fsdp.fsdp_plan(requested=True, version=plugin.fsdp_version,
                           distributed_type=state.distributed_type.name)
    if plan == "promote":
        _fsdp.promote(state, plugin)


def report_state(accelerator: Any, metrics: Mapping[str, Any]) -> None:
    """``accelerator.save_state`` into a folder of this rank's own, then
    ``ember.train.report(metrics, checkpoint=<that folder>)``: each rank uploads what it wrote
    (DDP: rank 0 the model and optimizer, every rank its RNG state; FSDP with
    ``SHARDED_STATE_DICT``: every rank its DCP shards; DeepSpeed ZeRO: every rank its
    partition, rank 0 also ``latest`` and, with ZeRO-1/2, the module weights). Call it on every
    rank."""
    _deepspeed.check_accelerator(accelerator, get_context().get_world_size())
    _check_fsdp(accelerator)
    with tempfile.TemporaryDirectory(prefix="ember-accelerate-") as folder:
        accelerator.save_state(folder)
        accelerator.wait_for_everyone()  # save_state does not wait for the other ranks
        _deepspeed.check_partitions_kept(folder)
        report(metrics, checkpoint=Checkpoint.from_directory(folder))


def restore_state(accelerator: Any) -> dict[str, Any] | None:
    """Load the checkpoint to resume from (``ember.train.get_checkpoint()``, every rank's part
    merged; with DeepSpeed ZeRO without the other ranks' partitions) with
    ``accelerator.load_state``, after ``accelerator.prepare``. Returns the metrics reported with
    it, or ``None`` at a fresh start (nothing loaded)."""
    context = get_context()
    _deepspeed.check_accelerator(accelerator, context.get_world_size())
    _check_fsdp(accelerator)
    checkpoint = get_checkpoint()
    if checkpoint is None:
        return None
    with tempfile.TemporaryDirectory(prefix="ember-accelerate-resume-") as folder:
        download_for_rank(checkpoint, folder, context.get_world_rank())
        accelerator.load_state(folder)
    return checkpoint.metrics


def _check_fsdp(accelerator: Any) -> None:
    wanted = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    kind = accelerator.distributed_type.name
    if wanted and kind != "FSDP":
        raise ValueError(
            f"FSDP was asked for but the Accelerator runs distributed_type={kind!r}: the model "
            "is not sharded. Configure FSDP through AccelerateTrainer(accelerate_config="
            "{'fsdp_config': {...}}), not Accelerator(fsdp_plugin=...)")
