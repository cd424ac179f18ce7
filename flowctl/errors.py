"""How the CLI turns library errors into one-line messages and exit codes."""

from __future__ import annotations


class CliError(Exception):
    """A failure the user can fix; printed as one line, exit code 1."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types shown as `error: message` with exit code 1 (no traceback)."""
    from hub_store.errors import StoreError
    from packer.errors import PackerError
    from runtime.errors import FlowError

    return (CliError, PackerError, StoreError, FlowError, OSError)
