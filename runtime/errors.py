"""The runtime's base error; each runtime component derives its own from it."""

from __future__ import annotations


class FlowError(Exception):
    """Base of the errors the runtime raises for the user; the message is one line."""
