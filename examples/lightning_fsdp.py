"""Fine-tune a tiny GPT-2 (Hugging Face ``GPT2LMHeadModel`` built from a config: nothing is
downloaded) with PyTorch Lightning and FSDP2 on 2 CPU workers; each rank uploads its own shard.

Run:  .venv/bin/python examples/lightning_fsdp.py [--storage PATH_OR_S3_URL] [--epochs N]
          [--quick]

``LightningTrainer`` runs a Lightning ``Trainer`` in each of ember's workers. ``.strategy("fsdp")``
is FSDP2 (``fully_shard`` on each GPT-2 block, then the model), which really shards on CPU
(Lightning's own ``"fsdp"`` refuses the CPU). At the end of every epoch Lightning saves a
checkpoint: each rank writes its shard with torch.distributed.checkpoint and uploads it straight
to storage. Then the run is resumed from its last checkpoint for one more epoch. It prints, e.g.:

    epoch 0  loss 5.1...  (rank 0 holds 60,288 of 120,576 parameters)
    epoch 1  loss 4.0...
    epoch 2  loss 3.2...
    checkpoint /tmp/ember-lightning-.../gpt2_fsdp/checkpoint_000002:
      rank_0/checkpoint.ckpt/.metadata      ...  bytes
      rank_0/checkpoint.ckpt/__0_0.distcp   ...  bytes
      rank_0/checkpoint.ckpt/meta.pt        ...  bytes
      rank_1/checkpoint.ckpt/__1_0.distcp   ...  bytes
    resumed from epoch 2: epoch 3  loss 2.7...

(among Lightning's own log lines). About 30 s of CPU time, most of it the workers importing
torch, Lightning and transformers; 68 s wall on a busy 2-core machine. ``--quick`` (what CI
runs) trains 1 epoch, not 3, then resumes for one more.
"""

from __future__ import annotations

import argparse
import tempfile

import lightning.pytorch as pl
import torch

import ember
from ember.train import RunConfig, ScalingConfig
from ember.train.lightning import LightningConfigBuilder, LightningTrainer

TEXT = ("ember runs python functions as tasks and actors, and trains models on many workers. "
        * 20).encode()


class GPT2Module(pl.LightningModule):
    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        self.lr = lr
        self.model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=256,
                                                n_positions=64, bos_token_id=0, eos_token_id=0))
        self.model.loss_type = "ForCausalLM"  # bytes in, next byte out

    def on_train_start(self) -> None:
        from torch.distributed.tensor import DTensor

        params = list(self.model.parameters())
        self.held = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
        self.full = sum(p.numel() for p in params)

    def training_step(self, batch, _index):
        loss = self.model(input_ids=batch, labels=batch).loss
        self.log("loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        for name, value in (("params_held", self.held), ("params_full", self.full)):
            self.log(name, float(value), on_step=False, on_epoch=True, sync_dist=True,
                     reduce_fx="max")
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def text_loader() -> torch.utils.data.DataLoader:
    data = torch.tensor(list(TEXT))
    windows = data[: len(data) // 33 * 33].view(-1, 33)  # byte-level sequences of 33 tokens
    return torch.utils.data.DataLoader(windows, batch_size=8, shuffle=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=None, help="folder or s3:// URL (default: a temp dir)")
    parser.add_argument("--epochs", type=int, default=None, help="default 3 (--quick: 1)")
    parser.add_argument("--quick", action="store_true", help="1 epoch (for CI)")
    args = parser.parse_args()
    epochs = args.epochs or (1 if args.quick else 3)
    storage = args.storage or tempfile.mkdtemp(prefix="ember-lightning-")

    def config(epochs: int):
        return (LightningConfigBuilder()
                .module(GPT2Module, lr=3e-3)
                .trainer(max_epochs=epochs, accelerator="cpu", enable_model_summary=False)
                .fit_params(train_dataloaders=text_loader())
                .strategy("fsdp")
                .build())

    scaling = ScalingConfig(num_workers=2)
    with ember.init(num_cpus=2):
        result = LightningTrainer(config(epochs), scaling_config=scaling,
                                  run_config=RunConfig(name="gpt2_fsdp", storage_path=storage)
                                  ).fit()
        for m in result.metrics_history:
            held = (f"  (rank 0 holds {m['params_held']:,.0f} of {m['params_full']:,.0f} "
                    "parameters)" if m["epoch"] == 0 else "")
            print(f"epoch {m['epoch']}  loss {m['loss']:.3f}{held}")
        checkpoint = result.checkpoint
        assert checkpoint is not None
        print(f"checkpoint {checkpoint.path}:")
        fs, root = checkpoint.filesystem, checkpoint.storage.root
        for path, info in sorted(fs.find(root, detail=True).items()):
            if "/rank_" in path:
                print(f"  {path[len(root) + 1:]:<38}{info['size']:>9,}  bytes")

        resumed = LightningTrainer(config(epochs + 1), scaling_config=scaling,
                                   resume_from_checkpoint=checkpoint,
                                   run_config=RunConfig(name="gpt2_fsdp_resumed",
                                                        storage_path=storage)).fit()
        last = resumed.metrics_history[-1]
        print(f"resumed from epoch {epochs - 1}: epoch {last['epoch']}  "
              f"loss {last['loss']:.3f}")


if __name__ == "__main__":
    main()
