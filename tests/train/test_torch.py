"""ember.train.torch: DDP, the data loader, the device, and FSDP2 sharded checkpoints with DCP
restored onto a different number of workers."""

from __future__ import annotations

import json
import os

import pytest

from ember.train import RunConfig, ScalingConfig
from ember.train.torch import TorchTrainer


def test_ddp_averages_gradients_and_data_is_split(ember_local, tmp_path):
    def loop(config):
        import torch
        import torch.distributed as dist
        from torch.utils.data import DataLoader

        import ember.train as train
        from ember.train.torch import get_device, prepare_data_loader, prepare_model

        ctx = train.get_context()
        rank = ctx.get_world_rank()
        torch.manual_seed(0)
        plain = torch.nn.Linear(3, 1)
        model = prepare_model(torch.nn.Linear(3, 1))
        model.module.load_state_dict(plain.state_dict())
        x = torch.full((4, 3), float(rank + 1))  # different data on each rank
        model(x).sum().backward()
        plain(x).sum().backward()
        local = plain.weight.grad.clone()
        everyone = [torch.zeros_like(local) for _ in range(ctx.get_world_size())]
        dist.all_gather(everyone, local)
        loader = prepare_data_loader(DataLoader(list(range(10)), batch_size=2, shuffle=True))
        seen = [int(i) for batch in loader for i in batch]
        result = {
            "rank": rank, "local_rank": ctx.get_local_rank(), "node_rank": ctx.get_node_rank(),
            "world_size": ctx.get_world_size(), "device": str(get_device()),
            "ddp_grad": model.module.weight.grad.tolist(),
            "mean_local_grad": torch.stack(everyone).mean(0).tolist(),
            "local_grad": local.tolist(), "seen": seen,
            "shard": list(train.get_dataset_shard("items")),
            "env": [os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["MASTER_ADDR"]],
        }
        with open(os.path.join(config["out"], f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
        train.report({"done": 1})

    TorchTrainer(loop, train_loop_config={"out": str(tmp_path)},
                 scaling_config=ScalingConfig(num_workers=2), datasets={"items": range(5)},
                 run_config=RunConfig(name="run", storage_path=str(tmp_path))).fit()

    ranks = []
    for rank in (0, 1):
        with open(tmp_path / f"rank{rank}.json") as f:
            ranks.append(json.load(f))
    r0, r1 = ranks
    assert r0["ddp_grad"] == r1["ddp_grad"]
    assert r0["ddp_grad"][0] == pytest.approx(r0["mean_local_grad"][0])
    assert r0["local_grad"] != r1["local_grad"]  # the ranks did see different data
    assert sorted(r0["seen"] + r1["seen"]) == list(range(10))  # each sample once overall
    assert r0["shard"] == [0, 2, 4] and r1["shard"] == [1, 3]
    assert [(r["rank"], r["local_rank"], r["node_rank"], r["world_size"]) for r in ranks] == \
        [(0, 0, 0, 2), (1, 1, 0, 2)]
    assert r0["env"] == ["0", "2", "127.0.0.1"] and r1["env"][0] == "1"
    assert r0["device"] == "cpu"


def fsdp_loop(config):
    """Train a tiny FSDP2 model one step and save a DCP checkpoint; or, with ``restore``,
    load the latest checkpoint on this (possibly different) number of workers and report the
    full weights."""
    import tempfile

    import torch
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    import ember.train as train
    from ember.train.torch import load_sharded, prepare_model, save_sharded

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    model = prepare_model(model, parallel_strategy="fsdp")
    state = {"model": get_model_state_dict(model)}
    checkpoint = train.get_checkpoint()
    if checkpoint is not None:
        load_sharded(state, checkpoint)
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, state["model"])
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        model(torch.randn(4, 8)).pow(2).sum().backward()
        optimizer.step()
        state = {"model": get_model_state_dict(model)}
    full = {}
    for name, value in get_model_state_dict(model).items():
        full[name] = (value.full_tensor() if hasattr(value, "full_tensor") else value).tolist()
    with tempfile.TemporaryDirectory() as d:
        save_sharded(state, d)
        train.report({"weights": full, "files": sorted(os.listdir(d))},
                     checkpoint=train.Checkpoint.from_directory(d))


@pytest.mark.parametrize("ember_local", [{"num_cpus": 3}], indirect=True)
def test_fsdp2_dcp_checkpoint_reshards_two_to_one_and_three(ember_local, tmp_path):
    saved = TorchTrainer(fsdp_loop, scaling_config=ScalingConfig(num_workers=2),
                         run_config=RunConfig(name="save", storage_path=str(tmp_path))).fit()
    assert saved.checkpoint is not None and saved.checkpoint.ranks == [0, 1]
    assert ".metadata" in saved.metrics["files"]
    assert os.listdir(tmp_path / "save" / "checkpoint_000000" / "rank_1") == ["__1_0.distcp"]

    for workers in (1, 3):
        restored = TorchTrainer(
            fsdp_loop, train_loop_config={"restore": True},
            scaling_config=ScalingConfig(num_workers=workers),
            resume_from_checkpoint=saved.checkpoint,
            run_config=RunConfig(name=f"restore{workers}", storage_path=str(tmp_path))).fit()
        assert restored.metrics["weights"] == saved.metrics["weights"], workers


def test_rendezvous_and_gloo_listen_on_loopback_only_on_one_machine(ember_local, tmp_path):
    def loop(config):
        import psutil
        import torch
        import torch.distributed as dist

        import ember.train as train

        total = torch.ones(1)
        dist.all_reduce(total)  # the gang is joined: every socket it needs is open
        listening = sorted({f"{c.laddr.ip} {c.laddr.port}"
                            for c in psutil.Process().net_connections("inet")
                            if c.status == psutil.CONN_LISTEN})
        rank = train.get_context().get_world_rank()
        with open(os.path.join(config["out"], f"rank{rank}.json"), "w") as f:
            json.dump({"listening": listening, "master_port": os.environ["MASTER_PORT"],
                       "total": total.item()}, f)
        dist.barrier()  # no rank leaves (closing its sockets) before every rank has looked
        train.report({"done": 1})

    TorchTrainer(loop, train_loop_config={"out": str(tmp_path)},
                 scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(name="run", storage_path=str(tmp_path))).fit()

    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert {r["total"] for r in ranks} == {2.0}
    rank0 = ranks[0]
    assert f"127.0.0.1 {rank0['master_port']}" in rank0["listening"]  # the rendezvous store
    for rank in ranks:
        assert rank["listening"], "nothing listening: the check itself is broken"
        assert all(entry.startswith("127.0.0.1 ") for entry in rank["listening"]), rank
