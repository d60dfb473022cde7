"""ember.train.huggingface with Accelerate: a tiny GPT-2 (built from a config, byte-level tokens)
trained by an Accelerate loop on 2 CPU workers, configured through Accelerate's environment
variables (no ``accelerate launch``); FSDP2 really sharded, DDP as Accelerate runs it.

Training loops are defined inside the tests: cloudpickle ships them to the workers by value.
"""

from __future__ import annotations

import json
import os

import pytest

from ember.train import FailureConfig, RunConfig, ScalingConfig
from ember.train.huggingface import AccelerateTrainer, accelerate_env
from tests.train._support import files_by_rank, read_log

TEXT = b"accelerate runs inside ember workers, configured by environment variables. " * 8
BLOCK = 32
FSDP2 = {"distributed_type": "FSDP",
         "fsdp_config": {"fsdp_version": 2, "fsdp_state_dict_type": "SHARDED_STATE_DICT",
                         "fsdp_reshard_after_forward": True}}


def byte_rows(n):
    rows = []
    for i in range(n):
        start = (i * 5) % (len(TEXT) - BLOCK)
        rows.append(list(TEXT[start:start + BLOCK]))
    return rows


def gpt2_loop(config):
    """(Runs in the workers.) Train a 2-layer GPT-2 with Accelerate; every other step is saved
    with ``report_state``. Logs where each attempt started, how the model is held, and a
    checksum of the full weights right after restoring; rank 1 kills itself once at
    ``config['kill_at']``."""
    import signal

    import torch
    import transformers
    from accelerate import Accelerator
    from torch.distributed.tensor import DTensor

    import ember.train as train
    from ember.train.huggingface import report_state, restore_state

    def weights_sum(model):
        return sum(float((p.full_tensor() if isinstance(p, DTensor) else p).double().sum())
                   for p in model.parameters())

    accelerator = Accelerator()
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=2, vocab_size=256, n_positions=BLOCK,
        bos_token_id=0, eos_token_id=0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    restored = restore_state(accelerator)
    start = 0 if restored is None else restored["step"] + 1
    rank = train.get_context().get_world_rank()
    params = list(model.parameters())
    with open(config["log"], "a") as f:
        f.write(json.dumps({
            "rank": rank, "start": start, "type": accelerator.distributed_type.name,
            "dtensor": all(isinstance(p, DTensor) for p in params),
            "local_numel": sum((p.to_local() if isinstance(p, DTensor) else p).numel()
                               for p in params),
            "full_numel": sum(p.numel() for p in params),
            "restored_sum": None if restored is None else weights_sum(model)}) + "\n")
    rows = train.get_dataset_shard("train")
    for step in range(start, config["steps"]):
        if step == config.get("kill_at") and rank == 1 and not os.path.exists(config["marker"]):
            open(config["marker"], "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        ids = torch.tensor([rows[(step * 2 + i) % len(rows)] for i in range(2)])
        loss = model(input_ids=ids, labels=ids).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        metrics = {"step": step, "loss": accelerator.reduce(loss.detach(), "mean").item()}
        if step % 2 == 1:
            report_state(accelerator, {**metrics, "weights_sum": weights_sum(model)})
        else:
            train.report(metrics)


@pytest.mark.slow
def test_fsdp2_accelerate_shards_on_cpu_uploads_each_rank_to_s3_and_resumes_after_a_kill(
        s3_bucket, ember_local, tmp_path):
    log, marker = str(tmp_path / "log.jsonl"), str(tmp_path / "killed")
    trainer = AccelerateTrainer(
        gpt2_loop, accelerate_config=FSDP2,
        train_loop_config={"steps": 6, "kill_at": 4, "log": log, "marker": marker},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="acc", storage_path=s3_bucket,
                             failure_config=FailureConfig(max_failures=1)),
        datasets={"train": byte_rows(16)})

    result = trainer.fit()

    assert os.path.exists(marker), "the worker was never killed"
    starts = read_log(log)
    # attempt 1 from scratch; rank 1 died before step 4; attempt 2 resumed from step 3's state
    assert sorted((r["rank"], r["start"]) for r in starts) == [(0, 0), (0, 4), (1, 0), (1, 4)]
    for record in starts:  # FSDP really ran: DTensor parameters, half the model on each rank
        assert record["type"] == "FSDP" and record["dtensor"], record
        assert record["local_numel"] < 0.6 * record["full_numel"], record
    saved_at_3 = next(m for m in result.metrics_history if m["step"] == 3)
    for record in starts:
        if record["start"] == 4:  # the restored weights are exactly those saved at step 3
            assert record["restored_sum"] == pytest.approx(saved_at_3["weights_sum"], rel=1e-9)
    assert [m["step"] for m in result.metrics_history] == [0, 1, 2, 3, 4, 5]
    assert result.metrics_history[-1]["loss"] < result.metrics_history[0]["loss"]
    assert result.path == f"{s3_bucket}/acc" and result.checkpoint is not None
    assert result.checkpoint.ranks == [0, 1] and result.checkpoint.metrics["step"] == 5
    files = files_by_rank(result.checkpoint)
    for rank in (0, 1):
        assert f"pytorch_model_fsdp_0/__{rank}_0.distcp" in files[rank]
        assert f"optimizer_0/__{rank}_0.distcp" in files[rank]
        assert f"random_states_{rank}.pkl" in files[rank]
    assert "pytorch_model_fsdp_0/.metadata" in files[0]
    assert not any(".metadata" in p for p in files[1])


def test_ddp_accelerate_uploads_what_each_rank_wrote_and_refuses_a_dropped_plugin(
        ember_local, tmp_path):
    def loop(config):
        from accelerate import Accelerator
        from accelerate.utils import FullyShardedDataParallelPlugin

        import ember.train as train
        from ember.train.huggingface import report_state

        # FSDP passed to Accelerator() directly, not through accelerate_config: on CPU
        # Accelerate drops it; the AccelerateTrainer refuses that Accelerator as soon as it is
        # made (report_state would refuse to save it as FSDP)
        try:
            report_state(Accelerator(fsdp_plugin=FullyShardedDataParallelPlugin(fsdp_version=2)),
                         {})
            refused = ""
        except ValueError as exc:
            refused = str(exc)
        del os.environ["ACCELERATE_USE_FSDP"]  # Accelerator(fsdp_plugin=...) set it
        train.report({"refused": refused})
        gpt2_loop(config)

    log = str(tmp_path / "log.jsonl")
    result = AccelerateTrainer(
        loop, train_loop_config={"steps": 2, "log": log},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="ddp", storage_path=str(tmp_path)),
        datasets={"train": byte_rows(8)}).fit()

    refused = result.metrics_history[0]["refused"]
    assert "distributed_type='MULTI_CPU'" in refused and "not sharded" in refused
    assert [(r["type"], r["dtensor"]) for r in read_log(log)] == [("MULTI_CPU", False)] * 2
    assert result.checkpoint is not None and result.checkpoint.metrics["step"] == 1
    files = files_by_rank(result.checkpoint)
    assert set(files[1]) == {"random_states_1.pkl"}  # all that rank 1 wrote under DDP
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl"} <= set(files[0])


def test_accelerate_env_is_what_accelerate_launch_would_set(tmp_path):
    env = accelerate_env(FSDP2, use_gpu=False)
    assert env == {"ACCELERATE_USE_FSDP": "true",
                   "FSDP_VERSION": "2", "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",
                   "FSDP_RESHARD_AFTER_FORWARD": "true"}
    assert accelerate_env(None, use_gpu=True) == {"ACCELERATE_USE_CPU": "false"}
    config_file = tmp_path / "accelerate.yaml"
    config_file.write_text("compute_environment: LOCAL_MACHINE\nnum_processes: 8\n"
                           "mixed_precision: bf16\ngradient_accumulation_steps: 4\n"
                           "fsdp_config:\n  fsdp_transformer_layer_cls_to_wrap: GPT2Block\n")
    assert accelerate_env(str(config_file), use_gpu=True) == {
        "ACCELERATE_USE_CPU": "false", "ACCELERATE_MIXED_PRECISION": "bf16",
        "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4", "ACCELERATE_USE_FSDP": "true",
        "FSDP_TRANSFORMER_CLS_TO_WRAP": "GPT2Block"}  # launch keys ignored
    with pytest.raises(ValueError, match=r"unsupported key\(s\) \['megatron_lm_config'\]"):
        accelerate_env({"megatron_lm_config": {}}, use_gpu=True)
    with pytest.raises(ValueError, match="distributed_type='MEGATRON_LM' is not supported"):
        accelerate_env({"distributed_type": "MEGATRON_LM"}, use_gpu=True)
    with pytest.raises(ValueError, match="fsdp_config but distributed_type='MULTI_CPU'"):
        accelerate_env({"distributed_type": "MULTI_CPU", "fsdp_config": {"fsdp_version": 2}},
                       use_gpu=False)
    with pytest.raises(ValueError, match="'MULTI_GPU' needs GPU workers"):
        accelerate_env({"distributed_type": "MULTI_GPU"}, use_gpu=False)
    with pytest.raises(ValueError, match="key 'version' must start with 'fsdp_'"):
        accelerate_env({"fsdp_config": {"version": 2}}, use_gpu=False)


def test_fsdp1_on_cpu_is_refused_before_accelerate_starts(monkeypatch):
    """Accelerate's default FSDP version is 1, which cannot shard on CPU: ember says so, and
    what to set, instead of training DDP (or failing inside Accelerate's plugin)."""
    from ember.train.huggingface._accelerate import _enable_fsdp_on_cpu

    for key, value in accelerate_env({"fsdp_config": {"fsdp_state_dict_type":
                                                      "SHARDED_STATE_DICT"}},
                                     use_gpu=False).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=r"FSDP version 1 .*fsdp_config': \{'fsdp_version': 2"):
        _enable_fsdp_on_cpu()


def test_restore_keeps_the_accelerate_environment_and_replaces_the_config(tmp_path):
    from ember.train._storage import Storage

    trainer = AccelerateTrainer(gpt2_loop, accelerate_config=FSDP2,
                                train_loop_config={"steps": 2},
                                scaling_config=ScalingConfig(num_workers=2),
                                run_config=RunConfig(name="r", storage_path=str(tmp_path)))
    trainer._save_state(Storage(trainer.path))  # what fit() writes before training

    restored = AccelerateTrainer.restore(trainer.path, train_loop_config={"steps": 4})

    assert restored.train_loop_config["config"] == {"steps": 4}
    assert restored.train_loop_config["env"]["FSDP_VERSION"] == "2"
    assert restored.train_loop_config["train_loop_per_worker"].__name__ == "gpt2_loop"
