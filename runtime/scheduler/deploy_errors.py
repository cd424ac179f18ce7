"""Why a deploy, scale or undeploy request cannot be carried out (`runtime.scheduler.service`)."""

from __future__ import annotations

from runtime.errors import FlowError


class DeployError(FlowError):
    """A deploy, scale or undeploy request cannot be carried out; the message says why."""


class NotDeployed(DeployError):
    """No deployment of that service exists."""


class UnknownService(DeployError):
    """The hub has no such service or version (raised by the manifest resolver)."""


class DeployConflict(DeployError):
    """The request contradicts another deployment (e.g. a model id served twice)."""
