"""DeepSpeed ZeRO through ember.train.huggingface on 2 CPU workers (gloo): the Ray 2.5 blog's
``TransformersTrainer`` example as written, and ``AccelerateTrainer`` with a ``DeepSpeedPlugin``
or an accelerate config naming DeepSpeed. ZeRO-2 and ZeRO-3 each: they train, report, upload
every rank's own partition to S3, resume after a killed worker with the losses of the run that
was not interrupted, and consolidate into a model that generates text. The configurations in
which Accelerate would drop DeepSpeed (plain DDP) or see each rank alone raise.

DeepSpeed is an optional extra (``ember-scale[deepspeed]``); its shared-memory comm op is built once
into ``TORCH_EXTENSIONS_DIR`` (the test set-up builds it, tests/conftest.py points there).
Loops and factories are defined at module level and shipped to the workers by cloudpickle.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile

import pytest

import ember
from ember.train import (
    CheckpointConfig,
    FailureConfig,
    RunConfig,
    ScalingConfig,
    TrainingFailedError,
)
from ember.train.huggingface import (
    AccelerateTrainer,
    TransformersTrainer,
    accelerate_env,
    consolidate_zero_checkpoint,
)
from ember.train.huggingface._deepspeed import file_owner, files_for_rank, is_zero_checkpoint
from tests.train._support import files_by_rank, read_log

needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="deepspeed is not installed (pip install "
                                            "'ember-scale[deepspeed]' with DS_BUILD_OPS=0)")

TEXT = b"ember trains a tiny gpt with deepspeed on two workers; each rank keeps its part. " * 8
BLOCK = 32


def byte_rows(n):
    rows = []
    for i in range(n):
        start = (i * 7) % (len(TEXT) - BLOCK)
        ids = list(TEXT[start:start + BLOCK])
        rows.append({"input_ids": ids, "labels": ids})
    return rows


# -- the Ray 2.5 blog's example, with a tiny GPT-2 built from a config -------------------------
def trainer_init_per_worker(train_dataset, eval_dataset, **config):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=256,
                                       n_positions=32, bos_token_id=0, eos_token_id=0))
    deepspeed = {
        "fp16": {"enabled": "auto"},
        "bf16": {"enabled": "auto"},
        "zero_optimization": {
            "stage": config["stage"],
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "gather_16bit_weights_on_model_save": False,
            "round_robin_gradients": True,
        },
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "steps_per_print": 10,
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "wall_clock_breakdown": False,
    }
    training_args = TrainingArguments(
        "output", per_device_train_batch_size=4, max_steps=config["max_steps"],
        learning_rate=5e-3, logging_steps=1, save_strategy="steps",
        save_steps=config["save_steps"], report_to=[], disable_tqdm=True, deepspeed=deepspeed)
    return Trainer(model=model, args=training_args, train_dataset=train_dataset,
                   eval_dataset=eval_dataset)


def probed_trainer_init(train_dataset, eval_dataset, **config):
    """The blog's factory as it is, plus a callback that logs every attempt's start, how the
    model is held, and each step's loss and gradient norm, and kills rank 1 once."""
    import signal

    import transformers

    import ember.train as train

    class Probe(transformers.TrainerCallback):
        def __init__(self, trainer):
            self.trainer = trainer

        def write(self, record):
            with open(config["log"], "a") as f:
                f.write(json.dumps({"rank": train.get_context().get_world_rank(),
                                    "attempt": 1 + os.path.exists(config["marker"]),
                                    **record}) + "\n")

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            engine = self.trainer.model_wrapped
            params = list(engine.module.parameters())
            self.write({"start": state.global_step, "engine": type(engine).__name__,
                        "local_numel": sum(getattr(p, "ds_tensor", p).numel() for p in params),
                        "full_numel": sum(getattr(p, "ds_numel", p.numel()) for p in params)})

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.write({"step": state.global_step, "loss": logs["loss"],
                            "grad_norm": logs.get("grad_norm")})

        def on_step_begin(self, args, state, control, **kwargs):
            if (state.global_step == config["kill_at"]
                    and train.get_context().get_world_rank() == 1
                    and not os.path.exists(config["marker"])):
                open(config["marker"], "w").close()
                os.kill(os.getpid(), signal.SIGKILL)

    trainer = trainer_init_per_worker(train_dataset, eval_dataset, **config)
    trainer.add_callback(Probe(trainer))
    return trainer


def check_resumed_exactly(log, kill_at, save_steps):
    """Attempt 2 restarted from the checkpoint before the kill, and each step that both attempts
    ran has the same loss and gradient norm in both."""
    records = read_log(log)
    starts = sorted((r["rank"], r["attempt"], r["start"]) for r in records if "start" in r)
    resumed_at = kill_at - kill_at % save_steps
    assert starts == [(0, 1, 0), (0, 2, resumed_at), (1, 1, 0), (1, 2, resumed_at)]
    steps = {(r["attempt"], r["step"]): (r["loss"], r["grad_norm"])
             for r in records if "step" in r and r["rank"] == 0}
    overlap = [s for s in range(resumed_at + 1, kill_at + 1)]
    assert overlap and all((1, s) in steps and (2, s) in steps for s in overlap), steps
    for step in overlap:
        assert steps[(2, step)] == pytest.approx(steps[(1, step)], rel=1e-6, abs=1e-9), step
    return records


def generates_text(folder):
    """Load a consolidated model with from_pretrained and generate; returns (text, loss of the
    trained text under the model, the same for an untrained model)."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    fresh = transformers.GPT2LMHeadModel(model.config)
    ids = torch.tensor([list(TEXT[:BLOCK])])
    with torch.no_grad():
        out = model.generate(ids[:, :8], max_new_tokens=16, do_sample=False,
                             pad_token_id=0)
        trained_loss = model(input_ids=ids, labels=ids).loss.item()
        fresh_loss = fresh(input_ids=ids, labels=ids).loss.item()
    return bytes(out[0, 8:].tolist()), trained_loss, fresh_loss


@needs_deepspeed
@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_blog_transformers_trainer_zero_uploads_each_rank_resumes_and_consolidates(
        stage, s3_bucket, ember_local, tmp_path):
    log, marker = str(tmp_path / "log.jsonl"), str(tmp_path / "killed")
    trainer = TransformersTrainer(
        trainer_init_per_worker=probed_trainer_init,
        trainer_init_config={"stage": stage, "max_steps": 6, "save_steps": 3, "kill_at": 5,
                             "log": log, "marker": marker},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(
            name="blog", storage_path=s3_bucket,
            failure_config=FailureConfig(max_failures=1),
            checkpoint_config=CheckpointConfig(_checkpoint_keep_all_ranks=True,
                                               _checkpoint_upload_from_workers=True)),
        datasets={"train": ember.data.from_items(byte_rows(64))})

    result = trainer.fit()

    assert result.error is None and os.path.exists(marker), "the worker was never killed"
    records = check_resumed_exactly(log, kill_at=5, save_steps=3)
    for record in (r for r in records if "start" in r):
        assert record["engine"] == "DeepSpeedEngine", record  # not DDP
        if stage == 3:  # ZeRO-3 partitions the parameters: about half on each rank
            assert record["local_numel"] < 0.6 * record["full_numel"], record
    assert result.metrics["step"] == 6 and "train_loss" in result.metrics
    losses = [m["loss"] for m in result.metrics_history if "loss" in m]
    assert [m["step"] for m in result.metrics_history if "loss" in m] == [1, 2, 3, 4, 5, 6]
    assert losses[-1] < losses[0]
    # S3: each rank uploaded its own ZeRO partition; rank 0 also what every rank reads
    assert result.path == f"{s3_bucket}/blog" and result.checkpoint.ranks == [0, 1]
    files = files_by_rank(result.checkpoint)
    step = "checkpoint-6/global_step6"
    own = ["optim_states"] + (["model_states"] if stage == 3 else [])
    for rank in (0, 1):
        for kind in own:
            assert files[rank][f"{step}/zero_pp_rank_{rank}_mp_rank_00_{kind}.pt"] > 10_000
        assert f"checkpoint-6/rng_state_{rank}.pth" in files[rank]
        other = 1 - rank
        assert not any(f"zero_pp_rank_{other}_" in p or f"rng_state_{other}" in p
                       for p in files[rank]), files[rank]
    assert {"checkpoint-6/latest", "checkpoint-6/trainer_state.json",
            "checkpoint-6/config.json"} <= set(files[0])
    assert set(files[1]) == {f"{step}/zero_pp_rank_1_mp_rank_00_{kind}.pt" for kind in own} | {
        "checkpoint-6/rng_state_1.pth"}
    if stage == 3:  # gather_16bit_weights_on_model_save=False: no whole model anywhere
        whole = {"model.safetensors", "pytorch_model.bin", "mp_rank_00_model_states.pt"}
        assert not any(p.rsplit("/", 1)[-1] in whole for p in files[0]), files[0]
    else:  # ZeRO-2 keeps whole parameters: rank 0 saves the module once
        assert f"{step}/mp_rank_00_model_states.pt" in files[0]
    # the stored partitions make one model that from_pretrained loads and that generates
    folder = consolidate_zero_checkpoint(result.checkpoint, str(tmp_path / "model"))
    text, trained_loss, fresh_loss = generates_text(folder)
    assert len(text) == 16 and trained_loss < fresh_loss - 1.0, (text, trained_loss, fresh_loss)


# -- Accelerate ----------------------------------------------------------------------------
def accelerate_loop(config):
    """(Runs in the workers.) A tiny GPT-2 trained with Accelerate and DeepSpeed, configured by
    ``accelerate_config`` or by a ``DeepSpeedPlugin`` passed here; every other step is saved
    with ``report_state``. Logs each attempt's start, how the model is held, and every step's
    loss; rank 1 kills itself once at ``config['kill_at']``."""
    import signal

    import torch
    import transformers
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DeepSpeedPlugin

    import ember.train as train
    from ember.train.huggingface import report_state, restore_state

    if config["route"] == "plugin":
        accelerator = Accelerator(deepspeed_plugin=DeepSpeedPlugin(hf_ds_config={
            "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": config["stage"]}}))
    else:  # the accelerate config set the environment; no dataloader here to size the batch
        accelerator = Accelerator()
        AcceleratorState().deepspeed_plugin.deepspeed_config[
            "train_micro_batch_size_per_gpu"] = 2
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=2, vocab_size=256, n_positions=BLOCK,
        bos_token_id=0, eos_token_id=0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    restored = restore_state(accelerator)
    start = 0 if restored is None else restored["step"] + 1
    rank = train.get_context().get_world_rank()
    attempt = 1 + os.path.exists(config["marker"])

    def write(record):
        with open(config["log"], "a") as f:
            f.write(json.dumps({"rank": rank, "attempt": attempt, **record}) + "\n")

    params = list(model.module.parameters())
    write({"start": start, "type": accelerator.distributed_type.name,
           "local_numel": sum(getattr(p, "ds_tensor", p).numel() for p in params),
           "full_numel": sum(getattr(p, "ds_numel", p.numel()) for p in params)})
    rows = train.get_dataset_shard("train")
    for step in range(start, config["steps"]):
        if step == config["kill_at"] and rank == 1 and not os.path.exists(config["marker"]):
            open(config["marker"], "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        ids = torch.tensor([rows[(step * 2 + i) % len(rows)]["input_ids"] for i in range(2)])
        loss = model(input_ids=ids, labels=ids).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        metrics = {"step": step, "loss": accelerator.reduce(loss.detach(), "mean").item()}
        write(metrics)
        if step % 3 == 2:
            report_state(accelerator, metrics)
        else:
            train.report(metrics)


@needs_deepspeed
@pytest.mark.slow
@pytest.mark.parametrize(("stage", "route"), [(2, "config"), (3, "plugin")])
def test_accelerate_zero_uploads_each_rank_resumes_and_consolidates(
        stage, route, s3_bucket, ember_local, tmp_path):
    log, marker = str(tmp_path / "log.jsonl"), str(tmp_path / "killed")
    result = AccelerateTrainer(
        accelerate_loop,
        accelerate_config={"deepspeed_config": {"zero_stage": stage}} if route == "config"
        else None,
        train_loop_config={"stage": stage, "route": route, "steps": 6, "kill_at": 4,
                           "log": log, "marker": marker},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(
            name="acc", storage_path=s3_bucket, failure_config=FailureConfig(max_failures=1),
            checkpoint_config=CheckpointConfig(_checkpoint_keep_all_ranks=True,
                                               _checkpoint_upload_from_workers=True)),
        datasets={"train": byte_rows(16)}).fit()

    assert result.error is None and os.path.exists(marker), "the worker was never killed"
    records = read_log(log)
    starts = sorted((r["rank"], r["attempt"], r["start"]) for r in records if "start" in r)
    assert starts == [(0, 1, 0), (0, 2, 3), (1, 1, 0), (1, 2, 3)]  # resumed after step 2's save
    for record in (r for r in records if "start" in r):
        assert record["type"] == "DEEPSPEED", record
        if stage == 3:
            assert record["local_numel"] < 0.6 * record["full_numel"], record
    losses = {(r["attempt"], r["step"]): r["loss"] for r in records
              if "step" in r and r["rank"] == 0}
    assert losses[(2, 3)] == pytest.approx(losses[(1, 3)], rel=1e-6)  # the step both ran
    assert [m["step"] for m in result.metrics_history] == [0, 1, 2, 3, 4, 5]
    assert result.metrics_history[-1]["loss"] < result.metrics_history[0]["loss"]
    assert result.checkpoint.ranks == [0, 1] and result.checkpoint.metrics["step"] == 5
    files = files_by_rank(result.checkpoint)
    own = ["optim_states"] + (["model_states"] if stage == 3 else [])
    for rank in (0, 1):
        for kind in own:
            assert files[rank][f"pytorch_model/zero_pp_rank_{rank}_mp_rank_00_{kind}.pt"] > 10_000
        assert f"random_states_{rank}.pkl" in files[rank]
    assert "latest" in files[0]
    assert set(files[1]) == {f"pytorch_model/zero_pp_rank_1_mp_rank_00_{kind}.pt"
                             for kind in own} | {"random_states_1.pkl"}
    # no config.json in an accelerate save_state: the model to fill is passed
    import transformers

    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=2, vocab_size=256, n_positions=BLOCK,
        bos_token_id=0, eos_token_id=0))
    with pytest.raises(ValueError, match=r"no config\.json.*model="):
        consolidate_zero_checkpoint(result.checkpoint, str(tmp_path / "nope"))
    folder = consolidate_zero_checkpoint(result.checkpoint, str(tmp_path / "model"), model=model)
    text, trained_loss, fresh_loss = generates_text(folder)
    assert len(text) == 16 and trained_loss < fresh_loss - 1.0, (text, trained_loss, fresh_loss)


# -- DeepSpeed never silently dropped ----------------------------------------------------
def dropped_loop():
    """(Runs in the workers of an AccelerateTrainer.) Every way found to lose DeepSpeed
    silently, each recorded with the error it raised (``None``: it did not raise)."""
    import transformers
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DeepSpeedPlugin

    import ember.train as train
    from ember.train.huggingface import prepare_trainer, restore_state

    def plugin():
        return DeepSpeedPlugin(hf_ds_config={"train_micro_batch_size_per_gpu": 2,
                                             "zero_optimization": {"stage": 3}})

    def attempt(make):
        try:
            make()
            return None
        except ValueError as exc:
            return str(exc)
        finally:
            os.environ.pop("ACCELERATE_USE_CPU", None)
            os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
            AcceleratorState._reset_state(reset_partial_state=True)
            PartialState(cpu=True)

    def hf_trainer(**extra):
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_layer=1, n_embd=32, n_head=2, vocab_size=256, n_positions=BLOCK))
        args = transformers.TrainingArguments(
            "out", max_steps=1, report_to=[], deepspeed={
                "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
                "zero_optimization": {"stage": 2}}, **extra)
        return prepare_trainer(transformers.Trainer(model=model, args=args))

    def accelerate_cpu_env():
        os.environ["ACCELERATE_USE_CPU"] = "true"
        Accelerator(deepspeed_plugin=plugin())

    def accelerate_alone():  # what a plain TorchTrainer loop gets without PartialState(cpu=True)
        AcceleratorState._reset_state(reset_partial_state=True)
        restore_state(Accelerator(deepspeed_plugin=plugin()))

    def hf_cpu_env():
        os.environ["ACCELERATE_USE_CPU"] = "true"
        hf_trainer(use_cpu=True)

    def hf_alone():
        AcceleratorState._reset_state(reset_partial_state=True)
        hf_trainer()

    def partitions_dropped():  # CheckpointConfig(keep_all_ranks=False) with ZeRO
        from ember.train.huggingface._deepspeed import check_partitions_kept

        with tempfile.TemporaryDirectory() as folder:
            os.makedirs(os.path.join(folder, "global_step2"))
            name = f"zero_pp_rank_{train.get_context().get_world_rank()}_mp_rank_00_optim_states.pt"
            open(os.path.join(folder, "global_step2", name), "w").close()
            check_partitions_kept(folder)

    outcome = {name: attempt(make) for name, make in {
        "partitions_dropped": partitions_dropped,
        "accelerate_cpu_flag": lambda: Accelerator(cpu=True, deepspeed_plugin=plugin()),
        "accelerate_cpu_env": accelerate_cpu_env,
        "accelerate_alone": accelerate_alone,
        "hf_cpu_env": hf_cpu_env,
        "hf_alone": hf_alone,
        "hf_use_cpu": lambda: hf_trainer(use_cpu=True),  # the right way: no error
    }.items()}
    train.report(outcome)


@needs_deepspeed
@pytest.mark.slow
def test_every_way_to_drop_deepspeed_silently_raises(ember_local, tmp_path):
    result = AccelerateTrainer(
        dropped_loop, scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="drop", storage_path=str(tmp_path),
                             checkpoint_config=CheckpointConfig(keep_all_ranks=False))).fit()

    outcome = result.metrics
    dropped = "DeepSpeed was dropped and .* would train plain DDP"
    for name in ("accelerate_cpu_flag", "accelerate_cpu_env"):
        assert outcome[name] is not None, name
        assert "distributed_type='MULTI_CPU'" in outcome[name], outcome[name]
    assert "DeepSpeed was dropped" in outcome["accelerate_cpu_flag"]
    assert "Accelerator(cpu=True) or ACCELERATE_USE_CPU=true" in outcome["accelerate_cpu_env"]
    assert "each rank would train alone" in (outcome["accelerate_alone"] or "")
    assert "PartialState(cpu=True)" in outcome["accelerate_alone"]
    assert outcome["hf_cpu_env"] is not None
    import re

    assert re.search(dropped, outcome["hf_cpu_env"]), outcome["hf_cpu_env"]
    assert "use_cpu=True" in outcome["hf_cpu_env"]
    # (the Accelerator that the Trainer creates is checked first, inside AccelerateTrainer; in
    # a plain TorchTrainer loop prepare_trainer says "the Trainer is not distributed")
    assert "each rank would train alone" in (outcome["hf_alone"] or "")
    assert "use_cpu=True" in outcome["hf_alone"]
    assert outcome["hf_use_cpu"] is None
    assert "keep_all_ranks=False) keeps rank 0's files only" in (outcome["partitions_dropped"]
                                                                 or "")


def blog_trainer_under_accelerate_use_cpu(train_dataset, eval_dataset, **config):
    os.environ["ACCELERATE_USE_CPU"] = "true"  # Accelerate's CPU switch: it drops DeepSpeed
    return trainer_init_per_worker(train_dataset, eval_dataset, **config)


@needs_deepspeed
@pytest.mark.slow
def test_transformers_trainer_refuses_deepspeed_that_accelerate_dropped(ember_local, tmp_path):
    trainer = TransformersTrainer(
        blog_trainer_under_accelerate_use_cpu,
        trainer_init_config={"stage": 3, "max_steps": 2, "save_steps": 2},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="drop", storage_path=str(tmp_path)),
        datasets={"train": ember.data.from_items(byte_rows(16))})

    with pytest.raises(TrainingFailedError, match=r"TrainingArguments\(deepspeed=...\) asks for "
                       r"DeepSpeed ZeRO but the Trainer's Accelerator runs distributed_type="
                       r"'MULTI_CPU': DeepSpeed was dropped .*ACCELERATE_USE_CPU=true"):
        trainer.fit()


# -- pure parts -----------------------------------------------------------------------------
ZERO3 = {
    0: ["checkpoint-6/global_step6/zero_pp_rank_0_mp_rank_00_model_states.pt",
        "checkpoint-6/global_step6/zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "checkpoint-6/latest", "checkpoint-6/trainer_state.json", "checkpoint-6/config.json",
        "checkpoint-6/rng_state_0.pth", "checkpoint-6/scheduler.pt",
        "checkpoint-6/zero_to_fp32.py"],
    1: ["checkpoint-6/global_step6/zero_pp_rank_1_mp_rank_00_model_states.pt",
        "checkpoint-6/global_step6/zero_pp_rank_1_mp_rank_00_optim_states.pt",
        "checkpoint-6/rng_state_1.pth"],
}


def test_each_rank_restores_its_own_partition_and_the_shared_files():
    assert files_for_rank(ZERO3, 0) == {0: sorted(ZERO3[0])}
    assert files_for_rank(ZERO3, 1) == {
        1: sorted(ZERO3[1]),
        0: ["checkpoint-6/config.json", "checkpoint-6/latest", "checkpoint-6/scheduler.pt",
            "checkpoint-6/trainer_state.json", "checkpoint-6/zero_to_fp32.py"]}
    # ZeRO-2: the module weights every rank loads, but not the Trainer's whole-model copy
    zero2 = {0: ["checkpoint-2/global_step2/mp_rank_00_model_states.pt",
                 "checkpoint-2/global_step2/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
                 "checkpoint-2/model.safetensors", "checkpoint-2/latest"],
             1: ["checkpoint-2/global_step2/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"]}
    assert files_for_rank(zero2, 1) == {
        1: zero2[1], 0: ["checkpoint-2/global_step2/mp_rank_00_model_states.pt",
                         "checkpoint-2/latest"]}
    # elastic checkpoints: every rank reads all optimizer partitions (not the model's)
    assert files_for_rank(ZERO3, 1, elastic=True)[0] == [
        "checkpoint-6/config.json",
        "checkpoint-6/global_step6/zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "checkpoint-6/latest", "checkpoint-6/scheduler.pt", "checkpoint-6/trainer_state.json",
        "checkpoint-6/zero_to_fp32.py"]
    # a file several ranks wrote is fetched once: this rank's own copy, else the lowest rank's
    assert files_for_rank({0: ["latest"], 1: ["latest"], 2: ["latest"]}, 2) == {2: ["latest"]}
    assert files_for_rank({0: ["latest"], 1: ["latest"], 2: []}, 2) == {0: ["latest"]}
    assert file_owner("pytorch_model/zero_pp_rank_12_mp_rank_00_optim_states.pt") == 12
    assert file_owner("random_states_3.pkl") == 3 and file_owner("latest") is None
    assert is_zero_checkpoint(ZERO3[1]) and not is_zero_checkpoint(
        ["checkpoint-2/pytorch_model_fsdp_0/__1_0.distcp", "checkpoint-2/rng_state_1.pth"])


def test_accelerate_env_for_a_deepspeed_config():
    env = accelerate_env({"distributed_type": "DEEPSPEED", "mixed_precision": "bf16",
                          "deepspeed_config": {"zero_stage": 3, "zero3_init_flag": True,
                                               "offload_optimizer_device": "cpu",
                                               "deepspeed_hostfile": "ignored"}},
                         use_gpu=False)
    assert env == {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_MIXED_PRECISION": "bf16",
                   "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3", "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true",
                   "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu",
                   "ACCELERATE_CONFIG_DS_FIELDS": "zero_stage,zero3_init_flag,"
                                                  "offload_optimizer_device,deepspeed_hostfile,"
                                                  "mixed_precision"}
    # no ACCELERATE_USE_CPU on CPU workers: Accelerate would drop DeepSpeed under it
    assert "ACCELERATE_USE_CPU" not in accelerate_env({"distributed_type": "DEEPSPEED"},
                                                      use_gpu=False)
    assert accelerate_env({"deepspeed_config": {"zero_stage": 2}}, use_gpu=True)[
        "ACCELERATE_USE_CPU"] == "false"
    with pytest.raises(ValueError, match=r"unsupported key\(s\) \['stage'\]"):
        accelerate_env({"deepspeed_config": {"stage": 3}}, use_gpu=False)
    with pytest.raises(ValueError, match="deepspeed_config but distributed_type='FSDP'"):
        accelerate_env({"distributed_type": "FSDP", "deepspeed_config": {"zero_stage": 3}},
                       use_gpu=False)
