"""WorkerGroup: the gang of actors that ember.train's workers and ember.rl's learners run on."""

from __future__ import annotations

import os

import pytest

import ember
from ember.util import WorkerGroup


def test_group_sets_torch_env_and_joins_a_process_group(ember_local):
    def probe():
        import torch
        import torch.distributed as dist

        total = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(total)
        env = {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
        return env, total.item(), os.getpid()

    with WorkerGroup(2) as group:
        group.setup_torch_distributed()
        results = group.execute(probe)
        assert [info.rank for info in group.infos] == [0, 1]
        assert [info.local_rank for info in group.infos] == [0, 1]
        assert {info.node_rank for info in group.infos} == {0}
        pids = [info.pid for info in group.infos]

    assert [env["RANK"] for env, _, _ in results] == ["0", "1"]
    assert {env["WORLD_SIZE"] for env, _, _ in results} == {"2"}
    assert [env["LOCAL_RANK"] for env, _, _ in results] == ["0", "1"]
    assert {total for _, total, _ in results} == {3.0}  # 1 + 2 summed across the gang
    assert [pid for _, _, pid in results] == pids


def test_first_error_raises_and_shutdown_stops_every_worker(ember_local):
    def fail_on_rank_one(rank_of_pid):
        if rank_of_pid[os.getpid()] == 1:
            raise ValueError("rank one failed")
        return "ok"

    group = WorkerGroup(2)
    group.start()
    ranks = {info.pid: info.rank for info in group.infos}
    with pytest.raises(ValueError, match="rank one failed"):
        group.execute(fail_on_rank_one, ranks)
    workers = list(group.workers)
    group.shutdown()
    with pytest.raises(ember.errors.ActorDiedError):
        ember.get(workers[0].metadata.remote())
    with pytest.raises(RuntimeError, match="not running"):
        group.execute(os.getpid)


def test_get_all_raises_a_later_rank_s_failure_while_an_earlier_one_still_runs(ember_local):
    import time

    def sleep_or_fail(rank):
        if rank == 0:
            time.sleep(60)  # until the group is shut down
        raise ValueError(f"rank {rank} failed")

    with WorkerGroup(2) as group:
        refs = [group.execute_single_async(rank, sleep_or_fail, rank) for rank in (0, 1)]
        started = time.monotonic()
        with pytest.raises(ValueError, match="rank 1 failed"):
            group.get_all(refs)
        assert time.monotonic() - started < 30  # not after rank 0's 60 s


def test_shutdown_returns_once_every_worker_process_is_gone(ember_local):
    # The trainer scans storage for the next checkpoint index right after a shutdown: a worker
    # still alive then could write into a folder that the next attempt reuses.
    import psutil

    group = WorkerGroup(2)
    group.start()
    pids = [info.pid for info in group.infos]

    assert group.shutdown() is True

    assert [pid for pid in pids if psutil.pid_exists(pid)] == []
