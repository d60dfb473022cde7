"""Pin ``ember.serve.__all__``: adding or removing a public name is a decision made here."""

from __future__ import annotations

import subprocess
import sys

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
    "ServeStatus",
    "batch",
    "delete",
    "deployment",
    "get_app_handle",
    "get_deployment_handle",
    "get_multiplexed_model_id",
    "ingress",
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


def test_importing_serve_loads_no_web_stack() -> None:
    code = (
        "import sys, ember; ember.serve; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
