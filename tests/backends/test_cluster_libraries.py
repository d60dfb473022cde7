"""ember's libraries and the main job on a two-node Ray cluster, as a user moving from one
machine to a cluster runs them.

One cluster for the module (``tests/backends/_cluster.py``): a head and a second node with 1 CPU
each, the configuration in which a dataset feeding a train run used to wait forever. The nodes
start without the test's AWS variables; the driver alone sets the credentials of moto's S3
server, and ember must bring them to the workers. Each test checks that its work ran in the
cluster's worker processes on both nodes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

import ember
from ember.errors import GetTimeoutError
from ember.testing import eventually
from tests.backends._cluster import Cluster, two_node_cluster

ray = pytest.importorskip("ray")
pytest.importorskip("s3fs")

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[2]
GET_TIMEOUT = 90
SECRET = f"ember-secret-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Connected:
    cluster: Cluster
    bucket: str  # s3://... in moto's server
    head: str  # node ids
    node_b: str

    def node_name(self, node_id: str) -> str:
        return {self.head: "head", self.node_b: "node_b"}[node_id]

    def node_of_pid(self, pid: int) -> str:
        """``"head"`` or ``"node_b"``: the node whose raylet started process ``pid`` (a worker
        of this cluster); fails for a process that is not one of the cluster's."""
        proc: psutil.Process | None = psutil.Process(pid)
        raylets = {p.pid: p for p in self.cluster.raylets()}
        while proc is not None and proc.pid not in raylets:
            proc = proc.parent()
        assert proc is not None, f"process {pid} is not a worker of the cluster"
        return "node_b" if "node_b," in " ".join(proc.cmdline()) else "head"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with two_node_cluster() as started:
        yield started


@pytest.fixture(scope="module")
def connected(cluster: Cluster, _moto_server: str) -> Iterator[Connected]:
    """ember on the cluster, with S3 credentials set in the driver only (after the nodes
    started, as on machines of their own)."""
    import s3fs

    with pytest.MonkeyPatch.context() as patch:
        for key, value in {"AWS_ENDPOINT_URL": _moto_server, "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": SECRET,
                           "AWS_DEFAULT_REGION": "us-east-1"}.items():
            patch.setenv(key, value)
        patch.setattr(logging.getLogger("werkzeug"), "level", logging.ERROR)  # moto: quiet
        s3fs.S3FileSystem.clear_instance_cache()
        bucket = f"ember-cluster-{uuid.uuid4().hex[:12]}"
        s3fs.S3FileSystem().mkdir(bucket)
        ember.init(backend="ray", address=cluster.address)
        try:
            nodes = eventually(lambda: len(_alive()) == 2 and _alive(),
                             what="both nodes to join the cluster")
            head = next(n["NodeID"] for n in nodes if "node:__internal_head__" in n["Resources"])
            node_b = next(n["NodeID"] for n in nodes if "node_b" in n["Resources"])
            yield Connected(cluster, f"s3://{bucket}", head, node_b)
        finally:
            ember.shutdown()
            s3fs.S3FileSystem.clear_instance_cache()


def _alive() -> list[dict[str, Any]]:
    return [node for node in ray.nodes() if node["Alive"]]


def free_cpus(node_id: str) -> float:
    from ray._private import state

    return float(state.available_resources_per_node().get(node_id, {}).get("CPU", 0.0))


def hold_the_heads_cpu(connected: Connected) -> Any:
    """An actor holding the head's only CPU: the head is busy."""

    @ember.remote
    class Busy:
        def ready(self) -> bool:
            return True

    busy = Busy.options(num_cpus=1, resources={"node:__internal_head__": 0.01}).remote()
    ember.get(busy.ready.remote(), timeout=GET_TIMEOUT)
    eventually(lambda: free_cpus(connected.head) == 0.0, what="the head's CPU to be taken")
    return busy


def alive_actor_nodes(class_name: str) -> list[str]:
    from ray._private import state

    return [info["Address"]["NodeID"] for info in state.actors().values()
            if info["ActorClassName"] == class_name and info["State"] == "ALIVE"]


# -- wall 1: storage credentials reach the workers ----------------------------------------------
def test_credentials_set_only_in_the_driver_reach_workers_on_both_nodes_and_no_file(
        connected: Connected) -> None:
    @ember.remote(num_cpus=0)
    def where_and_secret() -> tuple[str, str | None]:
        return ember.get_runtime_context().get_node_id(), os.environ.get("AWS_SECRET_ACCESS_KEY")

    seen = ember.get([where_and_secret.options(resources={"node_b": 0.01}).remote(),
                      where_and_secret.options(resources={"node:__internal_head__": 0.01}
                                               ).remote()], timeout=GET_TIMEOUT)
    assert sorted(seen) == sorted([(connected.node_b, SECRET), (connected.head, SECRET)])
    for raylet in connected.cluster.raylets():  # the nodes themselves never had it
        assert "AWS_SECRET_ACCESS_KEY" not in raylet.environ()
    # Ray writes a job's runtime_env["env_vars"] into its logs; ember's forwarding must not.
    holding = [str(path) for path in Path(connected.cluster.temp_dir).rglob("*")
               if path.is_file() and SECRET.encode() in path.read_bytes()]
    assert holding == []


def test_data_pipeline_with_an_actor_pool_writes_to_s3_from_both_nodes(
        connected: Connected) -> None:
    import numpy as np

    class Tag:
        def __init__(self) -> None:
            self.node = ember.get_runtime_context().get_node_id()

        def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
            batch["node"] = np.array([self.node] * len(batch["id"]))
            return batch

    target = f"{connected.bucket}/tagged"
    ember.data.range(400, parallelism=8).map_batches(
        Tag, compute=ember.data.ActorPoolStrategy(size=2), batch_size=50).write_parquet(target)

    rows = ember.data.read_parquet(target).take_all()
    assert sorted(r["id"] for r in rows) == list(range(400))
    assert {connected.node_name(r["node"]) for r in rows} == {"head", "node_b"}


# -- wall 2 (a dataset feeding a train run) and per-worker upload to S3 --------------------------
def test_dataset_feeding_a_train_run_on_two_1cpu_nodes_finishes_and_uploads_per_worker(
        connected: Connected) -> None:
    import s3fs

    from ember.train import Checkpoint, RunConfig, ScalingConfig
    from ember.train.torch import TorchTrainer

    def loop(config: dict[str, Any]) -> None:
        import tempfile

        from ember import train

        rows = sum(len(b["id"]) for b in train.get_dataset_shard("train").iter_batches(
            batch_size=8))
        rank = train.get_context().get_world_rank()
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, f"shard-{rank}.txt"), "w") as f:
                f.write(ember.get_runtime_context().get_node_id())
            train.report({"rows": rows, "pid": os.getpid()},
                         checkpoint=Checkpoint.from_directory(folder))

    # Half a CPU per worker, one worker per node: each node has half a CPU left, one CPU in
    # all. The split's read tasks used to ask for 1 CPU that no node had, and waited forever.
    result = TorchTrainer(
        loop,
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5},
                                     placement_strategy="STRICT_SPREAD"),
        run_config=RunConfig(name="on-two-nodes", storage_path=f"{connected.bucket}/train"),
        datasets={"train": ember.data.range(64, parallelism=4)},
    ).fit()

    assert result.metrics is not None and result.metrics["rows"] == 32  # rank 0's equal share
    assert result.checkpoint is not None and result.checkpoint.ranks == [0, 1]
    fs: Any = s3fs.S3FileSystem()
    written = {}
    for rank in (0, 1):
        [path] = fs.glob(f"{result.checkpoint.path}/rank_{rank}/shard-{rank}.txt")
        written[rank] = fs.cat(path).decode()  # uploaded by that rank's worker, on its node
    assert {connected.node_name(node) for node in written.values()} == {"head", "node_b"}


# -- wall 3: the HTTP proxy is on the head -------------------------------------------------------
def test_serve_proxy_on_the_head_streams_and_multiplexes_from_replicas_on_both_nodes(
        connected: Connected) -> None:
    import httpx

    from ember import serve

    @serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 1})
    class Streamer:
        @serve.multiplexed(max_num_models_per_replica=1)
        async def get_model(self, model_id: str) -> str:
            return model_id.upper()

        async def __call__(self, request: Any) -> Any:
            from starlette.responses import StreamingResponse

            model = await self.get_model(serve.get_multiplexed_model_id())

            async def tokens() -> Any:
                for i in range(3):
                    yield f"{model}{i} "
                    await asyncio.sleep(0.01)

            return StreamingResponse(tokens(), headers={"x-pid": str(os.getpid())})

    # A busy head: the controller lands on node_b, yet the proxy must be on the head, where
    # a client of the head reaches it on 127.0.0.1.
    busy = hold_the_heads_cpu(connected)
    try:
        port = serve.start(http_options={"port": 0})
    finally:
        ember.kill(busy)
    try:
        assert serve.status().proxies == {connected.head: port}
        assert alive_actor_nodes("Proxy") == [connected.head]
        eventually(lambda: free_cpus(connected.head) == 1.0, what="the head's CPU to come back")
        serve.run(Streamer.bind(), port=0)
        served: dict[str, str] = {}
        for model in ("a", "b", "a", "b"):
            with httpx.stream("GET", f"http://127.0.0.1:{port}/", timeout=60,
                              headers={"serve_multiplexed_model_id": model}) as response:
                chunks = list(response.iter_text())
                assert "".join(chunks) == f"{model.upper()}0 {model.upper()}1 {model.upper()}2 "
                pid = int(response.headers["x-pid"])
            assert served.setdefault(model, connected.node_of_pid(pid)) == \
                connected.node_of_pid(pid)  # a model stays on the replica that loaded it
        assert set(served.values()) == {"head", "node_b"}
        serve.shutdown()
        # EveryNode: a proxy pinned to each node (on its own port here: one machine).
        port = serve.start(proxy_location="EveryNode", http_options={"port": 0})
        proxies = serve.status().proxies
        assert set(proxies) == {connected.head, connected.node_b}
        assert proxies[connected.head] == port
        assert sorted(alive_actor_nodes("Proxy")) == sorted(proxies)
        for node_port in proxies.values():  # each answers (no application: 404)
            assert httpx.get(f"http://127.0.0.1:{node_port}/", timeout=30).status_code == 404
    finally:
        serve.shutdown()


# -- rl, and wall 5: gangs -----------------------------------------------------------------------
def test_ppo_with_2_runners_and_2_learners_runs_on_both_nodes(connected: Connected) -> None:
    from ember.rl import PPOConfig

    config = (PPOConfig().environment("CartPole-v1")
              .env_runners(num_env_runners=2, num_envs_per_env_runner=2)
              .learners(num_learners=2)
              .training(train_batch_size=400, minibatch_size=200, num_epochs=1))
    with config.build() as algo:
        result = algo.train()
        learners = [connected.node_of_pid(info.pid) for info in algo.learner_group.infos]
        runners = [connected.node_of_pid(pid) for pid in ember.get(
            [r.pid.remote() for r in algo.runners], timeout=GET_TIMEOUT)]
    assert result["num_env_steps_sampled"] >= 400
    assert sorted(learners) == ["head", "node_b"]  # one learner's CPU on each node
    assert len(runners) == 2  # in the cluster's worker processes (node_of_pid checks it)


def test_a_worker_group_starts_whole_or_not_at_all_and_says_what_it_waits_for(
        connected: Connected, caplog: pytest.LogCaptureFixture) -> None:
    from ember.util import WorkerGroup

    busy = hold_the_heads_cpu(connected)
    try:
        group = WorkerGroup(2, placement_timeout_s=4, grace_s=1)
        with caplog.at_level(logging.WARNING, logger="ember"), \
                pytest.raises(GetTimeoutError) as info:
            group.start()
        # It named the resource and what each node has, and held nothing meanwhile: node_b's
        # CPU stayed free for others (a half-started group would sit on it, waiting forever).
        assert re.search(r"CPU 0 free of 1.*CPU 1 free of 1|CPU 1 free of 1.*CPU 0 free of 1",
                         str(info.value)), info.value
        assert any("has waited" in r.getMessage() and "nothing is held" in r.getMessage()
                   for r in caplog.records)
        assert alive_actor_nodes("_Worker") == []
        assert free_cpus(connected.node_b) == 1.0
    finally:
        ember.kill(busy)
    eventually(lambda: free_cpus(connected.head) == 1.0, what="the head's CPU to come back")
    with WorkerGroup(2) as group:
        assert sorted(connected.node_of_pid(info.pid) for info in group.infos) == \
            ["head", "node_b"]
        assert [info.node_rank for info in group.infos] == [0, 1]


# -- wall 4: the main job takes the cluster from the environment ---------------------------------
@pytest.mark.timeout(300)
def test_the_main_job_runs_on_the_cluster_given_by_the_environment(
        connected: Connected, tmp_path: Path) -> None:
    env = {**connected.cluster.env, "EMBER_BACKEND": "ray",
           "EMBER_ADDRESS": connected.cluster.address, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "llm_lifecycle.py"), "--quick", "--local-s3",
         "--out", str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    (tmp_path / "demo.stdout.txt").write_text(done.stdout)  # for a look after a failure
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    text = done.stdout
    assert re.search(r"^ember \S+ on the ray backend, 2 nodes \(session", text, re.MULTILINE), \
        text
    for variant in ("base", "tuned"):  # both ranks uploaded to the S3 server of the driver
        assert re.search(rf"    {variant}: checkpoint s3://\S+ \(shards from ranks \[0, 1\]\)",
                         text), text
    assert text.count("    done in ") == 5
    # Its actors (train workers, pool actors, replicas, learners...) ran on both nodes.
    from ray._private import state

    job = re.search(r"\(session (\S+)\)", text)
    assert job, text
    nodes = {info["Address"]["NodeID"] for info in state.actors().values()
             if info["JobID"] == job.group(1)}
    assert {connected.node_name(node) for node in nodes} == {"head", "node_b"}


# -- serve's proxies follow the cluster (last here: a node joins the cluster and leaves it) -----
@pytest.mark.timeout(240)
def test_every_node_proxies_reach_a_node_that_joins_later_and_leave_with_it(
        connected: Connected) -> None:
    import httpx

    from ember import serve
    from tests.backends._cluster import extra_node

    def node_c() -> str | None:
        return next((str(n["NodeID"]) for n in _alive() if "node_c" in n["Resources"]), None)

    port = serve.start(proxy_location="EveryNode", http_options={"port": 0})
    try:
        assert set(serve.status().proxies) == {connected.head, connected.node_b}
        with extra_node(connected.cluster, "node_c") as leave:
            joined = eventually(node_c, timeout=60, what="node_c to join the cluster")
            proxies = eventually(lambda: joined in serve.status().proxies
                                 and serve.status().proxies, timeout=60,
                                 what="serve to start a proxy on the node that joined")
            assert set(proxies) == {connected.head, connected.node_b, joined}
            assert joined in alive_actor_nodes("Proxy")
            assert httpx.get(f"http://127.0.0.1:{proxies[joined]}/",  # no application: 404
                             timeout=30).status_code == 404
            leave()
            eventually(lambda: set(serve.status().proxies) == {connected.head,
                                                                connected.node_b},
                       timeout=120, what="the proxy of the node that left to be dropped")
        assert serve.status().http_port == port  # the head's proxy stays the main one
        for node_port in serve.status().proxies.values():
            assert httpx.get(f"http://127.0.0.1:{node_port}/", timeout=30).status_code == 404
    finally:
        serve.shutdown()
