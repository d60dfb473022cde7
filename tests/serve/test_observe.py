"""What serve shows on ``/metrics``, in the dashboard's ``"serve"`` view and in ``ember logs``:
requests, errors and latency per replica, and the replicas of each deployment."""

from __future__ import annotations

import httpx
import pytest

from ember import serve
from ember.dashboard import _server
from ember.testing import eventually
from tests.dashboard._support import scrape

pytestmark = pytest.mark.usefixtures("serve_instance")


def test_requests_errors_latency_and_replicas_are_shown():
    @serve.deployment(num_replicas=2)
    class Echo:
        async def __call__(self, request):
            text = request.query_params["text"]
            print(f"echoing {text}", flush=True)
            if text == "fail":
                raise ValueError("cannot echo that")
            return text

    handle = serve.run(Echo.bind(), name="echo-app", route_prefix="/echo", port=0)
    url = f"http://127.0.0.1:{serve.status().http_port}/echo"
    with httpx.Client(timeout=20) as client:
        for i in range(10):
            assert client.get(url, params={"text": f"t{i}"}).text == f"t{i}"
        assert client.get(url, params={"text": "fail"}).status_code == 500
    assert handle.remote(_Query("by handle")).result() == "by handle"

    def totals():
        found = scrape()
        requests = sum(found.get("serve_deployment_request_counter_total", {}).values())
        errors = sum(found.get("serve_deployment_error_counter_total", {}).values())
        return requests, errors, found

    eventually(lambda: totals()[:2] == (12.0, 1.0), what="12 requests, 1 error on /metrics")
    found = totals()[2]
    latency = found["serve_deployment_processing_latency_ms_count"]
    assert sum(latency.values()) == 12.0
    assert {dict(labels)["deployment"] for labels in latency} == {"Echo"}
    replicas = found["serve_deployment_replicas"]
    assert replicas[(("application", "echo-app"), ("deployment", "Echo"))] == 2.0

    service = _server.current()
    assert service is not None
    state = eventually(lambda: (service.views("serve").get("echo-app") or {}).get("state"),
                     what="the serve view")
    assert state["route_prefix"] == "/echo"
    deployment = state["deployments"]["Echo"]
    assert deployment["status"] == "HEALTHY"
    eventually(lambda: all(r["pid"] for r in service.views("serve")["echo-app"]["state"][
        "deployments"]["Echo"]["replicas"]), what="the replicas' pids")

    lines = eventually(lambda: [line["text"] for line in service.logs("echo-app/Echo")["lines"]
                              if line["text"].startswith("echoing")] if len(
        service.logs("echo-app/Echo")["lines"]) >= 12 else None,
        what="the replicas' output under the deployment's name")
    assert "echoing fail" in lines and "echoing t0" in lines


class _Query:
    """What a handle call passes where HTTP would pass a request."""

    def __init__(self, text: str) -> None:
        self.query_params = {"text": text}


def test_a_deleted_application_is_marked_so():
    @serve.deployment
    def hello(request):
        return "hi"

    serve.run(hello.bind(), name="short-lived", route_prefix="/hello", port=0)
    serve.delete("short-lived")
    service = _server.current()
    assert service is not None
    eventually(lambda: ((service.views("serve").get("short-lived") or {}).get("state") or {}).get(
        "status") == "DELETED", what="the application marked deleted")
