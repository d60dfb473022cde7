"""Serve's status and logging schemas, under Ray's module name (``ray.serve.schema``).

``serve.status()`` returns a ``ServeStatus``: ``applications`` maps each name to an
``ApplicationStatusOverview`` (``status``, ``route_prefix``, ``deployments``), each deployment a
``DeploymentStatusOverview`` (``status``, ``replicas``, ``target_replicas``, ``message``). The
``status`` fields are plain strings that compare equal to the members of ``ApplicationStatus``
and ``DeploymentStatus`` (``status == ApplicationStatus.RUNNING``), as Ray's do.
"""

from __future__ import annotations

import enum

from ember.serve._api import ApplicationStatus as ApplicationStatusOverview
from ember.serve._api import DeploymentStatus as DeploymentStatusOverview
from ember.serve._api import ServeStatus
from ember.serve._logging import LoggingConfig

__all__ = [
    "ApplicationStatus",
    "ApplicationStatusOverview",
    "DeploymentStatus",
    "DeploymentStatusOverview",
    "LoggingConfig",
    "ServeStatus",
]


class ApplicationStatus(str, enum.Enum):
    """The states of an application (those ember reports: DEPLOYING, RUNNING, DEPLOY_FAILED)."""

    NOT_STARTED = "NOT_STARTED"
    DEPLOYING = "DEPLOYING"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    RUNNING = "RUNNING"
    UNHEALTHY = "UNHEALTHY"
    DELETING = "DELETING"


class DeploymentStatus(str, enum.Enum):
    """The states of a deployment (those ember reports: UPDATING, HEALTHY, DEPLOY_FAILED)."""

    UPDATING = "UPDATING"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    UPSCALING = "UPSCALING"
    DOWNSCALING = "DOWNSCALING"
