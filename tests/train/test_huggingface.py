"""ember.train.huggingface with Transformers: a tiny GPT-2 (built from a config, byte-level
tokens, nothing downloaded) trained by HF ``Trainer`` on 2 CPU workers.

Trainer factories and callbacks are defined inside the tests: cloudpickle ships them to the
workers by value.
"""

from __future__ import annotations

import json
import os

import pytest

import ember
from ember.train import (
    Checkpoint,
    FailureConfig,
    RunConfig,
    ScalingConfig,
    TrainingFailedError,
)
from ember.train.huggingface import TransformersTrainer
from ember.train.huggingface._fsdp import fsdp_plan
from ember.train.torch import TorchTrainer
from tests.train._support import files_by_rank, read_log

TEXT = b"ember trains a tiny gpt on two workers; every rank uploads its own shard. " * 8
BLOCK = 32


def byte_rows(n):
    """``n`` rows of BLOCK byte-level tokens (labels = inputs: GPT-2 shifts them itself)."""
    rows = []
    for i in range(n):
        start = (i * 7) % (len(TEXT) - BLOCK)
        ids = list(TEXT[start:start + BLOCK])
        rows.append({"input_ids": ids, "labels": ids})
    return rows


def gpt2_trainer_factory(train_dataset, eval_dataset, **config):
    """(Runs in the workers.) A Trainer for a 2-layer GPT-2 built from a config, plus a probe
    callback that records where each attempt started and how the model is held, and kills
    rank 1 once at ``config['kill_at']`` (after the checkpoint before it was committed)."""
    import signal
    import time

    import torch
    import transformers

    import ember.train as train

    class Probe(transformers.TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            from torch.distributed.tensor import DTensor

            params = list(model.parameters())
            local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
            full = sum(p.numel() for p in params)
            record = {"rank": train.get_context().get_world_rank(), "start": state.global_step,
                      "dtensor": all(isinstance(p, DTensor) for p in params),
                      "local_numel": local, "full_numel": full, "time": time.time()}
            with open(config["log"], "a") as f:
                f.write(json.dumps(record) + "\n")

        def on_step_begin(self, args, state, control, **kwargs):
            if (config.get("kill_at") == state.global_step
                    and train.get_context().get_world_rank() == 1
                    and not os.path.exists(config["marker"])):
                open(config["marker"], "w").close()
                os.kill(os.getpid(), signal.SIGKILL)

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=2, vocab_size=256, n_positions=BLOCK,
        bos_token_id=0, eos_token_id=0))
    options = dict(output_dir="unused", max_steps=config["max_steps"],
                   per_device_train_batch_size=4, per_device_eval_batch_size=4,
                   learning_rate=5e-3, logging_steps=1, save_strategy="steps", save_steps=2,
                   eval_strategy="steps", eval_steps=2, report_to=[], disable_tqdm=True)
    options.update(config.get("extra_args", {}))
    args = transformers.TrainingArguments(**options)
    return transformers.Trainer(model=model, args=args, train_dataset=train_dataset,
                                eval_dataset=eval_dataset, callbacks=[Probe()])


@pytest.mark.slow
def test_fsdp2_gpt2_shards_on_cpu_uploads_each_rank_to_s3_and_resumes_after_a_kill(
        s3_bucket, ember_local, tmp_path):
    log, marker = str(tmp_path / "log.jsonl"), str(tmp_path / "killed")
    fsdp = {"fsdp": True, "fsdp_config": {"fsdp_version": 2,
                                          "state_dict_type": "SHARDED_STATE_DICT"}}
    trainer = TransformersTrainer(
        gpt2_trainer_factory,
        trainer_init_config={"max_steps": 6, "kill_at": 3, "log": log, "marker": marker,
                             "extra_args": fsdp},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="gpt2", storage_path=s3_bucket,
                             failure_config=FailureConfig(max_failures=1)),
        datasets={"train": ember.data.from_items(byte_rows(32)),
                  "evaluation": ember.data.from_items(byte_rows(8))})

    result = trainer.fit()

    assert os.path.exists(marker), "the worker was never killed"
    starts = read_log(log)
    # attempt 1 started at step 0; rank 1 died at step 3; attempt 2 resumed HF's checkpoint-2
    assert sorted((r["rank"], r["start"]) for r in starts) == [(0, 0), (0, 2), (1, 0), (1, 2)]
    # FSDP really ran: every parameter a DTensor, each rank holding about half the model
    for record in starts:
        assert record["dtensor"], record
        assert record["local_numel"] < 0.6 * record["full_numel"], record
    # the run's metrics: the end-of-training summary after 6 steps; losses fell
    assert result.metrics["step"] == 6 and "train_loss" in result.metrics
    losses = [m["loss"] for m in result.metrics_history if "loss" in m]
    assert losses[-1] < losses[0]
    assert {m["step"] for m in result.metrics_history if "loss" in m} == {1, 2, 3, 4, 5, 6}
    # step 3 ran after the resume from the trained weights (a fresh model would be back
    # near step 1's loss)
    step1 = next(m["loss"] for m in result.metrics_history if m["step"] == 1)
    step3 = [m["loss"] for m in result.metrics_history if m["step"] == 3 and "loss" in m]
    assert step3 and max(step3) < step1 - 0.4
    assert any("eval_loss" in m for m in result.metrics_history)
    # checkpoints in S3: steps 2, 4, 6, each rank's own DCP shards
    assert result.path == f"{s3_bucket}/gpt2" and result.checkpoint is not None
    assert result.checkpoint.ranks == [0, 1] and result.checkpoint.metrics["step"] == 6
    assert "eval_loss" in result.checkpoint.metrics
    files = files_by_rank(result.checkpoint)
    for rank in (0, 1):
        assert f"checkpoint-6/pytorch_model_fsdp_0/__{rank}_0.distcp" in files[rank]
        assert f"checkpoint-6/optimizer_0/__{rank}_0.distcp" in files[rank]
        assert f"checkpoint-6/rng_state_{rank}.pth" in files[rank]
    assert "checkpoint-6/trainer_state.json" in files[0]
    assert not any(p.endswith("trainer_state.json") or ".metadata" in p for p in files[1])
    with result.checkpoint.as_directory() as folder, \
            open(os.path.join(folder, "rank_0", "checkpoint-6", "trainer_state.json")) as f:
        assert json.load(f)["global_step"] == 6


def test_trainer_in_torch_trainer_with_ddp_uploads_what_each_rank_wrote(ember_local, tmp_path):
    """The plain TorchTrainer path: prepare_trainer and EmberReportCallback; DDP on CPU, where
    rank 1 writes only its RNG state. Without use_cpu=True, prepare_trainer refuses a Trainer
    that Accelerate left undistributed (each rank would train alone)."""

    def loop(config):
        from ember.train.huggingface import EmberReportCallback, prepare_trainer

        def build(**extra):
            return config["factory"](config["rows"], None, max_steps=2, log=config["log"],
                                     marker="", extra_args={"eval_strategy": "no", **extra})

        try:
            prepare_trainer(build())
            refused = ""
        except ValueError as exc:
            refused = str(exc)
        # FSDP asked for, prepare_trainer forgotten: Accelerate would train DDP; the callback
        # stops the run before the first step instead
        unprepared = build(use_cpu=True, fsdp=True, fsdp_config={"fsdp_version": 2})
        unprepared.add_callback(EmberReportCallback())
        try:
            unprepared.train()
            stopped = ""
        except ValueError as exc:
            stopped = str(exc)
        trainer = build(use_cpu=True)
        trainer.args.output_dir = config["out"]
        prepare_trainer(trainer)
        trainer.add_callback(EmberReportCallback())
        trainer.train()
        ember.train.report({"refused": refused, "stopped": stopped})

    config = {"rows": byte_rows(16), "factory": gpt2_trainer_factory,
              "log": str(tmp_path / "log.jsonl"), "out": str(tmp_path / "out")}
    result = TorchTrainer(loop, train_loop_config=config,
                          scaling_config=ScalingConfig(num_workers=2),
                          run_config=RunConfig(name="ddp", storage_path=str(tmp_path))).fit()

    assert "the Trainer is not distributed" in result.metrics["refused"]
    assert "use_cpu=True" in result.metrics["refused"]
    assert "asks for FSDP but the model's parameters are not sharded" in result.metrics["stopped"]
    assert result.checkpoint is not None and result.checkpoint.metrics["step"] == 2
    assert [m["step"] for m in result.metrics_history if "loss" in m] == [1, 2]
    files = files_by_rank(result.checkpoint)
    assert set(files[1]) == {"checkpoint-2/rng_state_1.pth"}  # all that rank 1 wrote
    assert {"checkpoint-2/model.safetensors", "checkpoint-2/optimizer.pt",
            "checkpoint-2/trainer_state.json", "checkpoint-2/rng_state_0.pth"} <= set(files[0])
    assert files[0]["checkpoint-2/model.safetensors"] > 100_000
    assert sorted(os.listdir(tmp_path / "out")) == ["rank_0", "rank_1"]  # one folder per rank
    # DDP: whole parameters on each rank (the unprepared FSDP trainer's too: it was stopped)
    assert [r["dtensor"] for r in read_log(config["log"])] == [False] * 4


def test_fsdp_plan_on_each_distributed_type():
    assert fsdp_plan(requested=False, version=1, distributed_type="MULTI_CPU") == "as_is"
    assert fsdp_plan(requested=True, version=2, distributed_type="FSDP") == "as_is"
    assert fsdp_plan(requested=True, version=2, distributed_type="MULTI_CPU") == "promote"
    with pytest.raises(ValueError, match=r"FSDP version 1 .* train plain DDP"):
        fsdp_plan(requested=True, version=1, distributed_type="MULTI_CPU")
    with pytest.raises(ValueError, match="distributed_type='NO'"):
        fsdp_plan(requested=True, version=2, distributed_type="NO")


def test_datasets_keys_and_factory_are_checked():
    with pytest.raises(ValueError, match=r"key\(s\) \['eval'\].*'evaluation'"):
        TransformersTrainer(gpt2_trainer_factory, scaling_config=ScalingConfig(),
                            datasets={"eval": []})
    with pytest.raises(TypeError, match="trainer_init_per_worker must be a function"):
        TransformersTrainer("not a function", scaling_config=ScalingConfig())  # type: ignore


def test_public_names_are_pinned():
    import ember.train.huggingface as hf

    assert hf.__all__ == ["AccelerateTrainer", "EmberReportCallback", "TransformersTrainer",
                          "accelerate_env", "consolidate_zero_checkpoint",
                          "get_resume_checkpoint", "prepare_trainer", "report_state",
                          "restore_state"]
    import transformers

    assert issubclass(hf.EmberReportCallback, transformers.TrainerCallback)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        hf.Nope  # noqa: B018


def test_importing_the_package_loads_neither_transformers_nor_torch():
    import subprocess
    import sys

    code = ("import sys, json, ember.train.huggingface as h; h.TransformersTrainer; "
            "print(json.dumps([m in sys.modules for m in "
            "('torch', 'transformers', 'accelerate')]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert json.loads(done.stdout) == [False, False, False]


def test_a_checkpoint_without_a_hf_folder_is_refused(ember_local, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "weights.bin").write_bytes(b"x")

    def loop():
        from ember.train.huggingface import get_resume_checkpoint

        get_resume_checkpoint()

    trainer = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=1),
                           resume_from_checkpoint=Checkpoint.from_directory(plain),
                           run_config=RunConfig(name="r", storage_path=str(tmp_path)))
    with pytest.raises(TrainingFailedError, match="holds no Hugging Face 'checkpoint-<step>'"):
        trainer.fit()


def test_restore_keeps_the_factory_and_replaces_what_is_given(tmp_path):
    from ember.train._storage import Storage

    trainer = TransformersTrainer(gpt2_trainer_factory, trainer_init_config={"max_steps": 4},
                                  scaling_config=ScalingConfig(num_workers=2),
                                  run_config=RunConfig(name="r", storage_path=str(tmp_path)))
    trainer._save_state(Storage(trainer.path))  # what fit() writes before training

    same = TransformersTrainer.restore(trainer.path)
    changed = TransformersTrainer.restore(trainer.path, train_loop_config={"max_steps": 8})

    assert same.train_loop_per_worker is trainer.train_loop_per_worker  # the worker wrapper
    assert same.train_loop_config["trainer_init_config"] == {"max_steps": 4}
    assert same.train_loop_config["trainer_init_per_worker"].__name__ == "gpt2_trainer_factory"
    assert changed.train_loop_config["trainer_init_config"] == {"max_steps": 8}
    assert changed.scaling_config.num_workers == 2 and changed.path == trainer.path


def test_runs_are_named_after_their_trainer() -> None:
    from ember.train import ScalingConfig
    from ember.train.huggingface import AccelerateTrainer, TransformersTrainer
    from ember.train.torch import TorchTrainer

    def loop() -> None:
        pass

    scaling = ScalingConfig(num_workers=1)
    for trainer in (TorchTrainer(loop, scaling_config=scaling),
                    TransformersTrainer(loop, scaling_config=scaling),
                    AccelerateTrainer(loop, scaling_config=scaling)):
        assert trainer.run_config.name.startswith(f"{type(trainer).__name__}_")
        assert trainer.run_config.storage_path
