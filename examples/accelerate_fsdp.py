"""Train a tiny GPT-2 with an Accelerate loop and FSDP2 on 2 ember workers, no ``accelerate
launch``.

Run:  .venv/bin/python examples/accelerate_fsdp.py [--storage PATH_OR_S3_URL] [--steps N]
          [--quick]

``accelerate_config`` is what an ``accelerate config`` file would hold; each worker sets the
environment variables that ``accelerate launch`` would derive from it, and the loop's
``Accelerator()`` reads them. On CPU workers Accelerate would drop FSDP and train DDP; ember
switches FSDP2 on, so each rank really holds half of every parameter (``fully_shard`` over gloo).
``report_state`` calls ``accelerator.save_state`` into a folder of each rank's own and uploads
it: every rank its DCP shards. The run is then continued for a few steps by a new run resumed
from the last checkpoint (``restore_state``). It prints, e.g.:

    rank 0 holds 59,264 of 118,528 parameters (FSDP)
    step   0  loss 5.5...
    ...
    step  19  loss 2.8...   (checkpoint)
    checkpoint /tmp/ember-accelerate-.../gpt2_fsdp/checkpoint_000003
      rank 0: optimizer_0/.metadata (41,513), optimizer_0/__0_0.distcp (564,001),
              pytorch_model_fsdp_0/.metadata (14,339), pytorch_model_fsdp_0/__0_0.distcp
              (315,557), random_states_0.pkl (14,497)
      rank 1: optimizer_0/__1_0.distcp (621,095), pytorch_model_fsdp_0/__1_0.distcp (315,557),
              random_states_1.pkl (14,433)
    rank 0 holds 59,264 of 118,528 parameters (FSDP)
    resumed at step 20: step 24 loss 2.8...

About 30 s on 2 idle CPU cores (most of it starting the workers and importing torch).
``--quick`` (what CI runs) trains 10 steps, not 20, and resumes for 5.
"""

from __future__ import annotations

import argparse
import tempfile

import ember
from ember.train import RunConfig, ScalingConfig
from ember.train.huggingface import AccelerateTrainer

TEXT = b"accelerate runs inside ember workers, configured by environment variables. " * 20
BLOCK = 32
ACCELERATE_CONFIG = {  # the format of `accelerate config`'s file
    "distributed_type": "FSDP",
    "mixed_precision": "no",
    "fsdp_config": {
        "fsdp_version": 2,
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_transformer_layer_cls_to_wrap": "GPT2Block",
        "fsdp_reshard_after_forward": True,
    },
}


def train_loop(config):
    import torch
    import transformers
    from accelerate import Accelerator
    from torch.distributed.tensor import DTensor

    import ember.train as train
    from ember.train.huggingface import report_state, restore_state

    accelerator = Accelerator()  # configured by the environment AccelerateTrainer set
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=2, vocab_size=256, n_positions=BLOCK,
        bos_token_id=0, eos_token_id=0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    restored = restore_state(accelerator)  # None at a fresh start
    start = 0 if restored is None else restored["step"] + 1
    params = list(model.parameters())
    local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
    if accelerator.is_main_process:
        print(f"rank 0 holds {local:,} of {sum(p.numel() for p in params):,} parameters "
              f"({accelerator.distributed_type.name})")
    data = torch.tensor(list(TEXT))
    generator = torch.Generator().manual_seed(train.get_context().get_world_rank())
    for step in range(start, start + config["steps"]):
        starts = torch.randint(0, len(data) - BLOCK, (8,), generator=generator)
        ids = torch.stack([data[s:s + BLOCK] for s in starts])
        loss = model(input_ids=ids, labels=ids).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        metrics = {"step": step, "loss": accelerator.reduce(loss.detach(), "mean").item()}
        if (step + 1) % config["every"] == 0:
            report_state(accelerator, metrics)  # every rank saves and uploads its own shard
        else:
            train.report(metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=tempfile.mkdtemp(prefix="ember-accelerate-"))
    parser.add_argument("--steps", type=int, default=None, help="default 20 (--quick: 10)")
    parser.add_argument("--quick", action="store_true", help="10 steps (for CI)")
    args = parser.parse_args()
    steps = args.steps or (10 if args.quick else 20)
    ember.init(num_cpus=2)
    try:
        result = AccelerateTrainer(
            train_loop, accelerate_config=ACCELERATE_CONFIG,
            train_loop_config={"steps": steps, "every": 5},
            scaling_config=ScalingConfig(num_workers=2),
            run_config=RunConfig(name="gpt2_fsdp", storage_path=args.storage)).fit()
        for row in result.metrics_history:
            saved = "   (checkpoint)" if (row["step"] + 1) % 5 == 0 else ""
            print(f"step {row['step']:3d}  loss {row['loss']:.4f}{saved}")
        checkpoint = result.checkpoint
        assert checkpoint is not None and checkpoint.manifest is not None
        print(f"checkpoint {checkpoint.path}")
        for rank, files in sorted(checkpoint.manifest.files.items()):
            print(f"  rank {rank}: " + ", ".join(f"{f.path} ({f.size:,})" for f in files))
        resumed = AccelerateTrainer(
            train_loop, accelerate_config=ACCELERATE_CONFIG,
            train_loop_config={"steps": 5, "every": 5},
            scaling_config=ScalingConfig(num_workers=2), resume_from_checkpoint=checkpoint,
            run_config=RunConfig(name="gpt2_fsdp_resumed", storage_path=args.storage)).fit()
        assert resumed.metrics is not None
        print(f"resumed at step {resumed.metrics_history[0]['step']}: "
              f"step {resumed.metrics['step']} loss {resumed.metrics['loss']:.4f}")
    finally:
        ember.shutdown()


if __name__ == "__main__":
    main()
