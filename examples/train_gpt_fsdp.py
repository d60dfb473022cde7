"""Train a tiny GPT with FSDP2 on 2 workers, checkpointing each rank's shard with DCP.

Run:  .venv/bin/python examples/train_gpt_fsdp.py [--storage PATH_OR_S3_URL] [--steps N]
          [--quick]

Each worker runs the loop below: the model is sharded with FSDP2 (``fully_shard``, gloo on CPU),
every few steps each rank saves its own shard with torch.distributed.checkpoint and uploads it
straight to storage. Then the run is resumed on ONE worker from the last checkpoint (DCP
reshards 2 -> 1). It prints the loss per reported step, where the checkpoints went, and the
loss after resuming, e.g.:

    step   0  loss 5.6...
    ...
    step  29  loss 1.3...   (the text repeats, so the loss falls)
    checkpoints: /tmp/ember-gpt-.../gpt_fsdp/checkpoint_000002 (ranks [0, 1])
    resumed on 1 worker from step 29: loss 1.2...

About 30 s on 2 CPU cores. ``--quick`` (what CI runs) trains 10 steps, not 30.
"""

from __future__ import annotations

import argparse
import tempfile

import ember
from ember.train import Checkpoint, CheckpointConfig, RunConfig, ScalingConfig
from ember.train.torch import TorchTrainer

TEXT = ("ember runs python functions as tasks and actors, and trains models on many workers. "
        * 20).encode()


def build_model():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, dim: int, heads: int) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x):
            n = x.shape[1]
            mask = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
            h = self.ln1(x)
            x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
            return x + self.mlp(self.ln2(x))

    class TinyGPT(nn.Module):  # GPT-2 shaped: n_layer=2, n_embd=64, vocab_size=256 (bytes)
        def __init__(self, vocab: int = 256, dim: int = 64, layers: int = 2, ctx: int = 32):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(ctx, dim)
            self.blocks = nn.Sequential(*[Block(dim, 4) for _ in range(layers)])
            self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, vocab))

        def forward(self, idx):
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
            return self.head(self.blocks(x))

    return TinyGPT()


def train_loop(config):
    import torch
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        set_model_state_dict,
    )

    import ember.train as train
    from ember.train.torch import load_sharded, prepare_model, save_sharded

    rank = train.get_context().get_world_rank()
    torch.manual_seed(0)
    model = prepare_model(build_model(), parallel_strategy="fsdp")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    start = 0
    checkpoint = train.get_checkpoint()
    if checkpoint is not None:
        state = {"model": get_model_state_dict(model)}
        load_sharded(state, checkpoint)  # any number of workers: DCP reshards
        set_model_state_dict(model, state["model"])
        start = checkpoint.metrics["step"] + 1
    data = torch.tensor(list(TEXT))
    generator = torch.Generator().manual_seed(rank)
    for step in range(start, start + config["steps"]):
        starts = torch.randint(0, len(data) - 33, (8,), generator=generator)
        batch = torch.stack([data[s:s + 33] for s in starts])
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % config["every"] == 0 or step == start + config["steps"] - 1:
            with tempfile.TemporaryDirectory() as d:
                save_sharded({"model": get_model_state_dict(model)}, d)
                train.report({"step": step, "loss": loss.item()},
                             checkpoint=Checkpoint.from_directory(d))
        else:
            train.report({"step": step, "loss": loss.item()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=tempfile.mkdtemp(prefix="ember-gpt-"))
    parser.add_argument("--steps", type=int, default=None, help="default 30 (--quick: 10)")
    parser.add_argument("--quick", action="store_true", help="10 steps (for CI)")
    args = parser.parse_args()
    steps = args.steps or (10 if args.quick else 30)
    ember.init(num_cpus=2)
    try:
        run_config = RunConfig(name="gpt_fsdp", storage_path=args.storage,
                               checkpoint_config=CheckpointConfig(num_to_keep=2))
        result = TorchTrainer(train_loop, train_loop_config={"steps": steps, "every": 10},
                              scaling_config=ScalingConfig(num_workers=2),
                              run_config=run_config).fit()
        for row in result.metrics_history:
            print(f"step {row['step']:3d}  loss {row['loss']:.4f}")
        assert result.checkpoint is not None
        print(f"checkpoints: {result.checkpoint.path} (ranks {result.checkpoint.ranks})")
        resumed = TorchTrainer(train_loop, train_loop_config={"steps": 1, "every": 1},
                               scaling_config=ScalingConfig(num_workers=1),
                               resume_from_checkpoint=result.checkpoint,
                               run_config=RunConfig(name="gpt_fsdp_resumed",
                                                    storage_path=args.storage)).fit()
        assert resumed.metrics is not None
        print(f"resumed on 1 worker from step {result.metrics['step']}: "
              f"loss {resumed.metrics['loss']:.4f}")
    finally:
        ember.shutdown()


if __name__ == "__main__":
    main()
