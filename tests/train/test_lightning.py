"""ember.train.lightning: a tiny GPT-2-like model trained by Lightning on 2 CPU workers with
DDP and FSDP2, per-rank checkpoints on the test S3 server, and resumption after a killed worker.

The module and loops live at module level: the workers import this module to unpickle them.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

from ember.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig  # noqa: E402
from ember.train.lightning import (  # noqa: E402
    LightningConfigBuilder,
    LightningTrainer,
    prepare_trainer,
)
from ember.train.lightning._strategies import check_sharded, shard_units  # noqa: E402
from ember.train.lightning._trainer import _with_retention  # noqa: E402
from ember.train.torch import TorchTrainer  # noqa: E402


# -- the model: GPT-2's shape (token + position embeddings, pre-norm blocks, tied-free head) ---
class Block(torch.nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln1 = torch.nn.LayerNorm(dim)
        self.attn = torch.nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = torch.nn.LayerNorm(dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(),
                                       torch.nn.Linear(4 * dim, dim))

    def forward(self, x):
        n = x.shape[1]
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=x.device), 1)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TinyGPT(torch.nn.Module):
    """n_layer=2, n_embd=64, n_head=2, vocab_size=256."""

    def __init__(self, vocab: int = 256, dim: int = 64, heads: int = 2, layers: int = 2,
                 context: int = 32) -> None:
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, dim)
        self.wpe = torch.nn.Embedding(context, dim)
        self.h = torch.nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln_f = torch.nn.LayerNorm(dim)
        self.lm_head = torch.nn.Linear(dim, vocab, bias=False)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


class GPTModule(pl.LightningModule):
    """Logs the mean loss and the epoch it started from; at the start of training writes how
    its parameters are held on this rank; rank 1 kills its own process at the start of epoch
    ``kill_at`` unless the ``kill`` marker file exists."""

    def __init__(self, out: str, kill: str | None = None, kill_at: int = -1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.gpt = TinyGPT()
        self.out, self.kill, self.kill_at = out, kill, kill_at
        self.start_epoch = -1

    def training_step(self, batch, _index):
        (tokens,) = batch
        logits = self.gpt(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 tokens[:, 1:].reshape(-1))
        self.log("loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log("start_epoch", float(self.start_epoch), on_step=False, on_epoch=True,
                 sync_dist=True, reduce_fx="max")
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3)

    def on_train_start(self) -> None:
        from torch.distributed.tensor import DTensor

        self.start_epoch = self.trainer.current_epoch  # > 0 once resumed from a checkpoint
        params = {name: {"dtensor": isinstance(p, DTensor), "full": p.numel(),
                         "local": (p.to_local() if isinstance(p, DTensor) else p).numel()}
                  for name, p in self.gpt.named_parameters()}
        rank = self.trainer.global_rank
        with open(os.path.join(self.out, f"params_rank{rank}_from{self.start_epoch}.json"),
                  "w") as f:
            json.dump({"params": params, "world_size": self.trainer.world_size,
                       "strategy": type(self.trainer.strategy).__name__}, f)

    def on_train_epoch_start(self) -> None:
        if self.kill and self.trainer.global_rank == 1 \
                and self.trainer.current_epoch == self.kill_at and not os.path.exists(self.kill):
            import signal

            open(self.kill, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # the previous epoch's checkpoint is committed


def token_loader():
    """64 sequences of 17 tokens, each token the previous + 3 (mod 256): quick to learn."""
    g = torch.Generator().manual_seed(0)
    tokens = (torch.randint(0, 256, (64, 1), generator=g) + torch.arange(17) * 3) % 256
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens), batch_size=8)


def s3_files(url: str) -> dict[str, int]:
    """Every file under an ``s3://`` folder, relative path -> size."""
    import s3fs

    fs = s3fs.S3FileSystem()
    root = url.removeprefix("s3://")
    return {path[len(root) + 1:]: info["size"]
            for path, info in fs.find(root, detail=True).items()}


def rank_files(files: dict[str, int], checkpoint: str, rank: int) -> dict[str, int]:
    prefix = f"{checkpoint}/rank_{rank}/"
    return {k[len(prefix):]: v for k, v in files.items() if k.startswith(prefix)}


def params_of(out, rank: int, start: int) -> dict:
    with open(os.path.join(out, f"params_rank{rank}_from{start}.json")) as f:
        return json.load(f)


# -- pure parts ------------------------------------------------------------------------------
LIGHTNING_ALL = [
    "EmberDDPStrategy",
    "EmberEnvironment",
    "EmberFSDPStrategy",
    "EmberReportCallback",
    "LightningConfig",
    "LightningConfigBuilder",
    "LightningTrainer",
    "ckpt_path",
    "prepare_trainer",
]


def test_lightning_all_is_pinned_and_importing_it_loads_no_lightning():
    import subprocess
    import sys

    import ember.train.lightning

    assert ember.train.lightning.__all__ == LIGHTNING_ALL
    assert all(getattr(ember.train.lightning, name) is not None for name in LIGHTNING_ALL)
    code = ("import sys, json, ember.train, ember.train.lightning; "
            "print(json.dumps([m in sys.modules for m in ('lightning', 'torch')]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert json.loads(done.stdout) == [False, False]  # the names above loaded it


def test_builder_rejects_what_ember_sets_or_cannot_honour():
    builder = LightningConfigBuilder()
    with pytest.raises(ValueError, match="needs a module"):
        builder.build()
    with pytest.raises(TypeError, match="LightningModule subclass"):
        builder.module(TinyGPT)
    with pytest.raises(ValueError, match=r"unknown strategy 'deepspeedx' \(known: 'ddp', 'fsdp'\)"):
        builder.strategy("deepspeedx")
    with pytest.raises(ValueError, match=r"strategy 'deepspeed': .*CUDA GPUs only.*strategy 'fsdp'"
                                         r".*FSDP2"):
        builder.strategy("deepspeed")
    with pytest.raises(ValueError, match=r"FSDP1 option\(s\) \['sharding_strategy'\].*FSDP2"):
        builder.strategy("fsdp", sharding_strategy="FULL_SHARD")
    with pytest.raises(ValueError, match=r"strategy=.*is set by ember.*\.strategy\("):
        builder.trainer(strategy="fsdp")
    from lightning.fabric.plugins.environments import LightningEnvironment

    with pytest.raises(ValueError, match=r"plugins=\[LightningEnvironment\(\)\].*EmberEnvironment"):
        builder.trainer(plugins=[LightningEnvironment()])
    with pytest.raises(ValueError, match=r"devices=2.*one device"):
        builder.trainer(devices=2)
    with pytest.raises(ValueError, match=r"ckpt_path.*resume_from_checkpoint"):
        builder.fit_params(ckpt_path="last")
    with pytest.raises(ValueError, match=r"every_n_epochs=0\) must be an integer >= 1"):
        builder.checkpointing(every_n_epochs=0)

    config = (builder.module(GPTModule, out="/tmp").trainer(max_epochs=2)
              .strategy("fsdp", reshard_after_forward=False)
              .checkpointing(monitor="loss", mode="min", save_top_k=2).build())
    assert (config.module_class, config.strategy, config.strategy_kwargs) == \
        (GPTModule, "fsdp", {"reshard_after_forward": False})
    retention = _with_retention(RunConfig(), config).checkpoint_config
    assert (retention.num_to_keep, retention.checkpoint_score_attribute,
            retention.checkpoint_score_order) == (2, "loss", "min")
    from ember.train import CheckpointConfig

    with pytest.raises(ValueError, match="retention is set twice"):
        _with_retention(RunConfig(checkpoint_config=CheckpointConfig(num_to_keep=5)), config)


def test_fsdp_shard_units_are_the_blocks_then_the_model():
    module = GPTModule(out="/tmp")
    units = shard_units(module)
    assert units == [module.gpt.h[0], module.gpt.h[1], module.gpt]
    # unsharded parameters under "fsdp" are an error, never a silent replica
    with pytest.raises(RuntimeError, match=r"parameter\(s\) are not sharded \(gpt\.wte\.weight"):
        check_sharded(module, world_size=2)

    class OwnParameter(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(3))

    with pytest.raises(ValueError, match=r"holds parameters itself \(scale\)"):
        shard_units(OwnParameter())


def test_ckpt_path_puts_every_ranks_shards_together(tmp_path):
    from ember.train.lightning import ckpt_path

    shards = {"rank_0/checkpoint.ckpt/.metadata": b"m",
              "rank_0/checkpoint.ckpt/meta.pt": b"p",
              "rank_0/checkpoint.ckpt/__0_0.distcp": b"0",
              "rank_1/checkpoint.ckpt/__1_0.distcp": b"1"}
    for rel, data in shards.items():
        (tmp_path / "fsdp" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fsdp" / rel).write_bytes(data)
    with ckpt_path(Checkpoint.from_directory(tmp_path / "fsdp")) as path:
        assert path is not None and os.path.basename(path) == "checkpoint.ckpt"
        assert sorted(os.listdir(path)) == [".metadata", "__0_0.distcp", "__1_0.distcp",
                                            "meta.pt"]
        with open(os.path.join(path, "__1_0.distcp"), "rb") as f:
            assert f.read() == b"1"
    assert not os.path.exists(path)  # the merged view is gone after the block
    (tmp_path / "other" / "rank_0").mkdir(parents=True)
    (tmp_path / "other" / "rank_0" / "model.pt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint\.ckpt \(found \['model\.pt'\]"), \
            ckpt_path(Checkpoint.from_directory(tmp_path / "other")):
        pass


def test_lightning_traps_the_integration_guards_against():
    # Lightning's own FSDP refuses the CPU (so ".strategy('fsdp')" cannot simply map to it)...
    with pytest.raises(ValueError, match=r"`fsdp` requires a GPU accelerator.*'cpu'"):
        pl.Trainer(accelerator="cpu", strategy="fsdp", logger=False)
    # ...and a Trainer on Lightning's own environment is refused before it can train
    trainer = pl.Trainer(accelerator="cpu", strategy="ddp", devices=1, logger=False)
    assert type(trainer.strategy.cluster_environment).__name__ == "LightningEnvironment"
    with pytest.raises(ValueError, match=r"LightningEnvironment.*plugins=\[EmberEnvironment"):
        prepare_trainer(trainer)
    # Lightning's DeepSpeed strategy is built for the CPU, and refuses it only once fit() sets
    # it up: ember refuses it before, naming FSDP2, whatever the number of workers
    if importlib.util.find_spec("deepspeed") is not None:
        trainer = pl.Trainer(accelerator="cpu", strategy="deepspeed", devices=1, logger=False)
        with pytest.raises(RuntimeError, match="only supported on CUDA GPUs"):
            trainer.strategy.setup_environment()
        with pytest.raises(ValueError, match=r"strategy DeepSpeedStrategy: .*CUDA GPUs only.*"
                                             r"EmberFSDPStrategy.*FSDP2"):
            prepare_trainer(trainer)


# -- end to end ------------------------------------------------------------------------------
@pytest.mark.slow
def test_lightning_trainer_fsdp_shards_uploads_per_rank_and_resumes(s3_bucket, ember_local,
                                                                    tmp_path):
    config = (LightningConfigBuilder()
              .module(GPTModule, out=str(tmp_path), kill=str(tmp_path / "killed"), kill_at=1)
              .trainer(max_epochs=3, accelerator="cpu", enable_model_summary=False)
              .fit_params(train_dataloaders=token_loader())
              .strategy("fsdp").build())
    result = LightningTrainer(
        config, scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="fsdp", storage_path=s3_bucket,
                             failure_config=FailureConfig(max_failures=1))).fit()

    assert (tmp_path / "killed").exists(), "the fault was never injected"
    history = result.metrics_history
    assert [m["epoch"] for m in history] == [0, 1, 2]
    # rank 1 died at the start of epoch 1: the restart resumed Lightning from epoch 0's
    # checkpoint (its loop state and its trained weights: the loss kept falling)
    assert [m["start_epoch"] for m in history] == [0, 1, 1]
    assert [m["step"] for m in history] == [4, 8, 12]  # 64 samples / 2 ranks / batch 8
    assert history[1]["loss"] < history[0]["loss"] - 0.3
    # the parameters really were sharded: each rank held half of each, as a DTensor
    for start in (0, 1):
        ranks = [params_of(tmp_path, rank, start) for rank in (0, 1)]
        for held in ranks:
            assert held["strategy"] == "EmberFSDPStrategy" and held["world_size"] == 2
            assert all(p["dtensor"] for p in held["params"].values())
            assert sum(p["local"] for p in held["params"].values()) < \
                sum(p["full"] for p in held["params"].values())
        for name, p in ranks[0]["params"].items():
            assert p["local"] + ranks[1]["params"][name]["local"] == p["full"], name
    # each rank uploaded its own shard, and only its own
    files = s3_files(result.path)
    # three commits; the failed attempt's index is never reused, so they need not be consecutive
    checkpoints = sorted({k.split("/")[0] for k in files if k.startswith("checkpoint_")})
    assert len(checkpoints) == 3
    for checkpoint in (checkpoints[0], checkpoints[-1]):
        assert sorted(rank_files(files, checkpoint, 0)) == [
            "checkpoint.ckpt/.metadata", "checkpoint.ckpt/__0_0.distcp", "checkpoint.ckpt/meta.pt"]
        assert sorted(rank_files(files, checkpoint, 1)) == ["checkpoint.ckpt/__1_0.distcp"]
    assert result.checkpoint is not None and result.checkpoint.ranks == [0, 1]


class Probe(pl.Callback):
    """Writes, at the end of training, how many child processes this worker has."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer, pl_module) -> None:
        import psutil

        with open(os.path.join(self.out, f"children_rank{trainer.global_rank}.json"), "w") as f:
            json.dump(len(psutil.Process().children(recursive=True)), f)


def prepared_trainer_loop(config):
    """The modern path: a Lightning Trainer built in a plain TorchTrainer loop."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    import ember.train as train
    from ember.train.lightning import (
        EmberDDPStrategy,
        EmberEnvironment,
        EmberReportCallback,
        ckpt_path,
    )

    out = config["out"]
    rank = train.get_context().get_world_rank()
    # Lightning's LightningEnvironment would launch processes of its own without LOCAL_RANK;
    # EmberEnvironment needs no such variable.
    os.environ.pop("LOCAL_RANK", None)
    refused = {}
    for name, make in {
        "lightning_environment": lambda: pl.Trainer(accelerator="cpu", strategy="ddp",
                                                    devices=1, logger=False),
        "model_parallel": lambda: pl.Trainer(accelerator="cpu", strategy=ModelParallelStrategy(),
                                             plugins=[EmberEnvironment()], logger=False),
    }.items():
        try:
            prepare_trainer(make())
            refused[name] = None
        except ValueError as exc:
            refused[name] = str(exc)
    with open(os.path.join(out, f"refused_rank{rank}.json"), "w") as f:
        json.dump(refused, f)
    trainer = prepare_trainer(pl.Trainer(
        max_epochs=3, accelerator="cpu", strategy=EmberDDPStrategy(),
        plugins=[EmberEnvironment()], callbacks=[EmberReportCallback(every_n_epochs=2), Probe(out)],
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False))
    module = GPTModule(out=out, kill=os.path.join(out, "killed"), kill_at=2)
    with ckpt_path() as path:
        trainer.fit(module, train_dataloaders=token_loader(), ckpt_path=path)


@pytest.mark.slow
def test_prepared_trainer_ddp_uploads_rank0_checkpoint_and_resumes(s3_bucket, ember_local,
                                                                   tmp_path):
    result = TorchTrainer(
        prepared_trainer_loop, train_loop_config={"out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="ddp", storage_path=s3_bucket,
                             failure_config=FailureConfig(max_failures=1))).fit()

    assert (tmp_path / "killed").exists(), "the fault was never injected"
    history = result.metrics_history
    # reported every 2nd epoch and at the last one; rank 1 died at the start of epoch 2, and
    # the restart resumed from epoch 1's checkpoint with its trained weights (a fresh model's
    # loss would be back at epoch 0's, above epoch 1's)
    assert [(m["epoch"], m["start_epoch"], m["step"]) for m in history] == \
        [(1, 0, 8), (2, 2, 12)]
    assert history[1]["loss"] < history[0]["loss"]
    for rank in (0, 1):
        held = params_of(tmp_path, rank, 2)
        assert held["strategy"] == "EmberDDPStrategy" and held["world_size"] == 2
        assert all(not p["dtensor"] and p["local"] == p["full"]
                   for p in held["params"].values())  # DDP: every rank holds it all
        with open(tmp_path / f"children_rank{rank}.json") as f:
            assert json.load(f) == 0  # Lightning launched no process of its own
        with open(tmp_path / f"refused_rank{rank}.json") as f:
            refused = json.load(f)
        assert "LightningEnvironment" in refused["lightning_environment"]
        assert "EmberFSDPStrategy" in refused["model_parallel"]
    # DDP: rank 0 wrote the whole checkpoint and uploaded it; rank 1 wrote and uploaded nothing
    files = s3_files(result.path)
    checkpoints = sorted({k.split("/")[0] for k in files if k.startswith("checkpoint_")})
    assert len(checkpoints) == 2
    for checkpoint in checkpoints:
        assert list(rank_files(files, checkpoint, 0)) == ["checkpoint.ckpt"]
        assert rank_files(files, checkpoint, 1) == {}
    assert result.checkpoint is not None and result.checkpoint.ranks == [0]
    assert isinstance(result.checkpoint, Checkpoint)
