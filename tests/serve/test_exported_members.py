"""Pin ``ember.serve.__all__``: adding or removing a public name is a decision made here."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from ember import serve

SERVE_ALL = [
    "Application",
    "ApplicationStatus",
    "AutoscalingConfig",
    "BackPressureError",
    "Deployment",
    "DeploymentConfig",
    "DeploymentFailedError",
    "DeploymentHandle",
    "DeploymentResponse",
    "DeploymentResponseGenerator",
    "DeploymentStatus",
    "DeploymentUnavailableError",
    "HTTPOptions",
    "LoggingConfig",
    "ProxyLocation",
    "ServeStatus",
    "batch",
    "delete",
    "deployment",
    "gRPCOptions",
    "get_app_handle",
    "get_deployment",
    "get_deployment_handle",
    "get_multiplexed_model_id",
    "get_replica_context",
    "ingress",
    "list_deployments",
    "multiplexed",
    "run",
    "shutdown",
    "start",
    "status",
]


def test_serve_all_is_pinned() -> None:
    assert serve.__all__ == SERVE_ALL
    for name in SERVE_ALL:
        assert hasattr(serve, name), name


# Ray's module names, each with the names Ray programs import from it.
MODULE_ALL = {
    "config": ["AutoscalingConfig", "DeploymentMode", "HTTPOptions", "ProxyLocation",
               "gRPCOptions"],
    "context": ["ReplicaContext", "get_replica_context"],
    "handle": ["DeploymentHandle", "DeploymentResponse", "DeploymentResponseGenerator"],
    "schema": ["ApplicationStatus", "ApplicationStatusOverview", "DeploymentStatus",
               "DeploymentStatusOverview", "LoggingConfig", "ServeStatus"],
}


@pytest.mark.parametrize("module", sorted(MODULE_ALL))
def test_ray_module_names_are_pinned(module: str) -> None:
    imported = importlib.import_module(f"ember.serve.{module}")
    assert imported.__all__ == MODULE_ALL[module]
    assert getattr(serve, module) is imported  # reachable as serve.<module>, as in Ray
    for name in imported.__all__:
        assert getattr(imported, name).__doc__, name


# Ray 2.5's deployment-graph modules: imported by name (``from ember.serve.drivers import
# DAGDriver``), not loaded with ember.serve (http_adapters needs pydantic).
GRAPH_MODULE_ALL = {
    "dag": ["DAGNode", "InputAttributeNode", "InputNode"],
    "drivers": ["DAGDriver"],
    "http_adapters": ["NdArray", "image_to_ndarray", "json_request", "json_to_multi_ndarray",
                      "json_to_ndarray", "pandas_read_json", "starlette_request"],
}


@pytest.mark.parametrize("module", sorted(GRAPH_MODULE_ALL))
def test_ray_2_5_graph_module_names_are_pinned(module: str) -> None:
    imported = importlib.import_module(f"ember.serve.{module}")
    assert imported.__all__ == GRAPH_MODULE_ALL[module]
    for name in imported.__all__:
        assert getattr(imported, name).__doc__, name


def test_importing_serve_loads_no_web_stack() -> None:
    code = (
        "import sys, ember; ember.serve; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
