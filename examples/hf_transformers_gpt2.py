"""Fine-tune a tiny GPT-2 with a Hugging Face ``Trainer`` on 2 ember workers.

Run:  .venv/bin/python examples/hf_transformers_gpt2.py [--storage PATH_OR_S3_URL] [--fsdp]
          [--steps N] [--quick]

The model is built from a ``GPT2Config`` (2 layers, 64 wide, 256 byte-level tokens: nothing is
downloaded). Each worker gets its shard of an ``ember.data`` dataset as a torch
``IterableDataset``, builds its ``Trainer`` and trains; every save (``save_steps``) becomes an
ember checkpoint, each rank uploading the files it wrote. DDP by default; ``--fsdp`` shards the
model with FSDP2 (which ember switches on for CPU workers, where Accelerate would drop it), and
every rank uploads its own DCP shard. Besides the Trainer's own log lines (``{'loss': ...}``
from each worker), it prints the losses that ember recorded, what each rank uploaded, and
(DDP) the loss of rank 0's saved model reloaded with ``from_pretrained``, e.g.:

    step  10  loss 4.1...
    step  20  loss 2.7...   eval_loss 2.5...
    step  30  loss 2.4...
    step  40  loss 2.1...   eval_loss 2.0...
    checkpoint /tmp/ember-hf-.../gpt2_ddp/checkpoint_000001 (HF step 40)
      rank 0: checkpoint-40/config.json (818), ..., checkpoint-40/model.safetensors (476,744),
              checkpoint-40/optimizer.pt (971,611), ..., checkpoint-40/trainer_state.json (...)
      rank 1: checkpoint-40/rng_state_1.pth (14,469)
    rank 0's model reloaded with from_pretrained: loss 2.0... on the evaluation rows

About 30 s on 2 idle CPU cores (most of it importing torch and transformers in the workers).
``--quick`` (what CI runs) trains 20 steps, not 40: one checkpoint and one evaluation.
"""

from __future__ import annotations

import argparse
import tempfile

import ember
from ember.train import CheckpointConfig, RunConfig, ScalingConfig
from ember.train.huggingface import TransformersTrainer

TEXT = b"ember trains a tiny gpt on two workers, and every rank uploads its own shard. " * 20
BLOCK = 32


def rows(n: int, offset: int = 0) -> list[dict[str, list[int]]]:
    """Byte-level windows of TEXT; GPT-2 shifts the labels itself."""
    out = []
    for i in range(n):
        start = (offset + i * 7) % (len(TEXT) - BLOCK)
        ids = list(TEXT[start:start + BLOCK])
        out.append({"input_ids": ids, "labels": ids})
    return out


def trainer_init_per_worker(train_dataset, eval_dataset, **config):
    """Runs in each worker: the datasets are this worker's shards."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=2, vocab_size=256, n_positions=BLOCK,
        bos_token_id=0, eos_token_id=0))
    fsdp = ({"fsdp": True, "fsdp_config": {"fsdp_version": 2,
                                           "state_dict_type": "SHARDED_STATE_DICT"}}
            if config["fsdp"] else {})
    args = transformers.TrainingArguments(
        output_dir="gpt2", max_steps=config["steps"], per_device_train_batch_size=8,
        per_device_eval_batch_size=8, learning_rate=5e-3, warmup_steps=2,
        logging_steps=10, save_steps=20, eval_strategy="steps", eval_steps=20,
        report_to=[], disable_tqdm=True, **fsdp)
    return transformers.Trainer(model=model, args=args, train_dataset=train_dataset,
                                eval_dataset=eval_dataset)


def reloaded_loss(checkpoint, eval_rows) -> float:
    """Load rank 0's saved model (DDP saves it whole, as a plain Hugging Face folder) and
    measure its loss on the evaluation rows. (It reads a little above the Trainer's eval_loss,
    which divides by every label token, including the first of each row that nothing
    predicts: 32 per row, not 31.)"""
    import os

    import torch
    import transformers

    with checkpoint.for_rank(0).as_directory() as folder:
        hf_folder = next(os.path.join(folder, d) for d in os.listdir(folder)
                         if d.startswith("checkpoint-"))
        model = transformers.GPT2LMHeadModel.from_pretrained(hf_folder)  # a local folder
    ids = torch.tensor([row["input_ids"] for row in eval_rows])
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=tempfile.mkdtemp(prefix="ember-hf-"))
    parser.add_argument("--steps", type=int, default=None, help="default 40 (--quick: 20)")
    parser.add_argument("--fsdp", action="store_true", help="FSDP2 instead of DDP")
    parser.add_argument("--quick", action="store_true", help="20 steps (for CI)")
    args = parser.parse_args()
    steps = args.steps or (20 if args.quick else 40)
    ember.init(num_cpus=2)
    try:
        name = "gpt2_fsdp" if args.fsdp else "gpt2_ddp"
        eval_rows = rows(32, offset=3)
        result = TransformersTrainer(
            trainer_init_per_worker,
            trainer_init_config={"steps": steps, "fsdp": args.fsdp},
            scaling_config=ScalingConfig(num_workers=2),
            run_config=RunConfig(name=name, storage_path=args.storage,
                                 checkpoint_config=CheckpointConfig(num_to_keep=1)),
            datasets={"train": ember.data.from_items(rows(256)),
                      "evaluation": ember.data.from_items(eval_rows)},
        ).fit()
        for row in result.metrics_history:
            if "loss" in row and "train_loss" not in row:
                extra = f"   eval_loss {row['eval_loss']:.4f}" if "eval_loss" in row else ""
                print(f"step {row['step']:3d}  loss {row['loss']:.4f}{extra}")
        checkpoint = result.checkpoint
        assert checkpoint is not None and checkpoint.manifest is not None
        print(f"checkpoint {checkpoint.path} (HF step {checkpoint.metrics['step']})")
        for rank, files in sorted(checkpoint.manifest.files.items()):
            listed = ", ".join(f"{f.path} ({f.size:,})" for f in files)
            print(f"  rank {rank}: {listed}")
        if not args.fsdp:
            print(f"rank 0's model reloaded with from_pretrained: loss "
                  f"{reloaded_loss(checkpoint, eval_rows):.4f} on the evaluation rows")
    finally:
        ember.shutdown()


if __name__ == "__main__":
    main()
