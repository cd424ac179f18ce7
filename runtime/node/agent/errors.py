"""The node agent's errors, one hierarchy.

    AgentError (runtime.errors.FlowError)
    └── JoinRefused   the control plane refused this node; retrying would not help

Connection trouble is no error here: the agent retries it with backoff.
"""

from __future__ import annotations

from runtime.errors import FlowError


class AgentError(FlowError):
    """Base of the node agent's errors."""


class JoinRefused(AgentError):
    """The control plane refused this node (bad or revoked token or credential, an id it may
    not claim, protocol mismatch); the message says why, in one line."""
