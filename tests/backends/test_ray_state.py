"""``ember.util.state`` and the dashboard's views on the ray backend: rows from Ray's state API,
and views published inside Ray actors reaching the driver."""

from __future__ import annotations

import pytest

import ember
from ember.dashboard import _server
from ember.errors import ActorDiedError
from ember.testing import LeakCheck, eventually
from ember.util import metrics, state

pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_state_and_views_on_the_ray_backend():
    # Ray's state API is served by Ray's dashboard: include_dashboard starts it and ember's
    ember.init(backend="ray", num_cpus=2, include_dashboard=True, dashboard_port=0)
    try:
        @ember.remote
        class Broken:
            def __init__(self):
                raise ValueError("bad config")

            def ping(self):
                return 1

        @ember.remote
        class Publisher:
            def run(self):
                metrics.publish("jobs", "on-ray", state={"where": "ray actor"})
                metrics.flush()
                return 1

        broken = Broken.remote()
        with pytest.raises(ActorDiedError):
            ember.get(broken.ping.remote(), timeout=120)
        publisher = Publisher.remote()
        ember.get(publisher.run.remote(), timeout=120)

        dead = eventually(lambda: state.list_actors(filters=[("state", "=", "DEAD")]),
                        timeout=60, what="the dead actor in Ray's state API")
        assert dead[0].class_name.endswith("Broken")
        assert "ValueError: bad config" in dead[0].death_cause
        summary = eventually(lambda: state.summarize_tasks()["recent_failures"], timeout=60,
                           what="the failed call")
        assert any("ping" in f["func_or_class_name"] for f in summary)
        [node] = state.list_nodes()
        assert node.resources_total["CPU"] == 2.0

        service = _server.current()
        assert service is not None
        eventually(lambda: "on-ray" in service.views("jobs"), timeout=60,
                 what="the actor's view, through the sink")
        assert service.views("jobs")["on-ray"]["state"] == {"where": "ray actor"}
        del broken, publisher
    finally:
        LeakCheck(timeout=60).check()
