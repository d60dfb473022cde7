"""Handle and response classes, under Ray's module name (``ray.serve.handle``)."""

from __future__ import annotations

from ember.serve._handle import (
    DeploymentHandle,
    DeploymentResponse,
    DeploymentResponseGenerator,
)

__all__ = ["DeploymentHandle", "DeploymentResponse", "DeploymentResponseGenerator"]
