"""``AccelerateTrainer``: an Accelerate training loop on ember workers, without ``accelerate
launch``.

``accelerate launch`` does two things: it starts the processes (ember's workers do that, and
join them in ``torch.distributed``) and it passes the config file to them as environment
variables (``ACCELERATE_USE_FSDP``, ``FSDP_VERSION``, ``ACCELERATE_MIXED_PRECISION``...), which
``Accelerator()`` reads. ``accelerate_env`` turns a config (the ``accelerate config`` file's
format) into those variables; each worker sets them before the loop runs.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from ember.train._checkpoint import Checkpoint
from ember.train._config import RunConfig, ScalingConfig
from ember.train._session import get_checkpoint, get_context, report
from ember.train._trainer import TorchTrainer, check_loop_and_scaling, restore_wrapped
from ember.train.huggingface._files import download_merged

DISTRIBUTED_TYPES = ("NO", "MULTI_CPU", "MULTI_GPU", "FSDP")
# Keys of an `accelerate config` file that describe the launch: ember's workers replace it.
LAUNCH_KEYS = frozenset({
    "compute_environment", "debug", "downcast_bf16", "enable_cpu_affinity", "gpu_ids",
    "machine_rank", "main_process_ip", "main_process_port", "main_training_function",
    "num_machines", "num_processes", "rdzv_backend", "same_network", "tpu_env",
    "tpu_use_cluster", "tpu_use_sudo", "use_cpu",
})
FSDP_ENV_NAMES = {"transformer_layer_cls_to_wrap": "FSDP_TRANSFORMER_CLS_TO_WRAP"}


def accelerate_env(config: Mapping[str, Any] | str | None, *, use_gpu: bool) -> dict[str, str]:
    """The environment variables that ``accelerate launch`` would set for ``config``.

    ``config`` is a dict in the format of an ``accelerate config`` file, or the path of such a
    YAML/JSON file: ``distributed_type`` (``"NO"``, ``"MULTI_CPU"``, ``"MULTI_GPU"`` or
    ``"FSDP"``; ``fsdp_config`` alone implies ``"FSDP"``), ``mixed_precision``,
    ``gradient_accumulation_steps`` and ``fsdp_config`` (``fsdp_version``,
    ``fsdp_state_dict_type``, ``fsdp_auto_wrap_policy``, ``fsdp_transformer_layer_cls_to_wrap``,
    ``fsdp_reshard_after_forward``...). The launch keys (``num_processes``,
    ``main_process_port``...) are ignored: ember starts the processes.

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
    kind = str(config.pop("distributed_type", "FSDP" if fsdp_config else "MULTI_CPU")).upper()
    if kind not in DISTRIBUTED_TYPES:
        raise ValueError(f"accelerate_config distributed_type={kind!r} is not supported by the "
                         f"AccelerateTrainer (supported: {', '.join(DISTRIBUTED_TYPES)})")
    if fsdp_config and kind != "FSDP":
        raise ValueError(f"accelerate_config has an fsdp_config but distributed_type={kind!r}; "
                         "set distributed_type='FSDP' or drop fsdp_config")
    env = {"ACCELERATE_USE_CPU": "false" if use_gpu else "true"}
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
    would drop it and train DDP) and FSDP1 refused.
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
    ) -> None:
        check_loop_and_scaling(train_loop_per_worker, scaling_config)  # before the wrapping
        env = accelerate_env(accelerate_config, use_gpu=scaling_config.use_gpu)  # fail early
        super().__init__(
            _accelerate_loop,
            train_loop_config={"train_loop_per_worker": train_loop_per_worker, "env": env,
                               "config": train_loop_config},
            scaling_config=scaling_config, run_config=run_config, datasets=datasets,
            resume_from_checkpoint=resume_from_checkpoint)

    @classmethod
    def restore(cls, path: str, *, train_loop_per_worker: Callable[..., Any] | None = None,
                train_loop_config: dict[str, Any] | None = None,
                datasets: dict[str, Any] | None = None) -> TorchTrainer:
        """A trainer that resumes the run in ``path`` (whose driver died) from its latest
        committed checkpoint (see ``TorchTrainer.restore``); a loop or config given here
        replaces the saved one."""
        return restore_wrapped(path, datasets, {"train_loop_per_worker": train_loop_per_worker,
                                                "config": train_loop_config})


def _accelerate_loop(config: dict[str, Any]) -> None:
    """(In each worker) set Accelerate's environment, fix FSDP on CPU, run the user's loop."""
    env: dict[str, str] = config["env"]
    os.environ.update(env)
    if env.get("ACCELERATE_USE_FSDP") == "true" and not get_context().use_gpu:
        _enable_fsdp_on_cpu()
    fn = config["train_loop_per_worker"]
    takes_config = len(inspect.signature(fn).parameters) > 0
    fn(config["config"] or {}) if takes_config else fn()


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
    ``SHARDED_STATE_DICT``: every rank its DCP shards). Call it on every rank."""
    _check_fsdp(accelerator)
    with tempfile.TemporaryDirectory(prefix="ember-accelerate-") as folder:
        accelerator.save_state(folder)
        accelerator.wait_for_everyone()  # save_state does not wait for the other ranks
        report(metrics, checkpoint=Checkpoint.from_directory(folder))


def restore_state(accelerator: Any) -> dict[str, Any] | None:
    """Load the checkpoint to resume from (``ember.train.get_checkpoint()``, every rank's part
    merged) with ``accelerator.load_state``, after ``accelerator.prepare``. Returns the metrics
    reported with it, or ``None`` at a fresh start (nothing loaded)."""
    _check_fsdp(accelerator)
    checkpoint = get_checkpoint()
    if checkpoint is None:
        return None
    with tempfile.TemporaryDirectory(prefix="ember-accelerate-resume-") as folder:
        download_merged(checkpoint, folder)
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
