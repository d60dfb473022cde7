"""ember.serve: put models behind HTTP, with replicas, routing, autoscaling, streaming and
model multiplexing.

    from ember import serve

    @serve.deployment(num_replicas=2)
    class Echo:
        async def __call__(self, request):
            return {"you_sent": (await request.body()).decode()}

    handle = serve.run(Echo.bind(), port=8000)   # HTTP on 127.0.0.1:8000, and a handle
    serve.shutdown()

Replicas and the HTTP proxy are ember actors; starlette and uvicorn load only when serve starts.
"""

from __future__ import annotations

# Ray's module names, reachable as attributes (serve.context, serve.handle, ...) as in Ray.
from ember.serve import config as config
from ember.serve import context as context
from ember.serve import handle as handle
from ember.serve import schema as schema
from ember.serve._api import (
    ApplicationStatus,
    DeploymentFailedError,
    DeploymentStatus,
    ServeStatus,
    delete,
    get_app_handle,
    get_deployment,
    get_deployment_handle,
    list_deployments,
    run,
    shutdown,
    start,
    status,
)
from ember.serve._autoscaling import AutoscalingConfig
from ember.serve._batching import batch
from ember.serve._deployment import Application, Deployment, DeploymentConfig, deployment, ingress
from ember.serve._handle import (
    BackPressureError,
    DeploymentHandle,
    DeploymentResponse,
    DeploymentResponseGenerator,
    DeploymentUnavailableError,
)
from ember.serve._logging import LoggingConfig
from ember.serve._multiplex import get_multiplexed_model_id, multiplexed
from ember.serve.config import HTTPOptions, ProxyLocation, gRPCOptions
from ember.serve.context import get_replica_context

__all__ = [
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
