"""How the CLI turns library errors into one-line messages and exit codes."""

from __future__ import annotations

import sys

# Each package's error root; see user_errors.
_ERROR_ROOTS = (("hub_store.errors", "StoreError"), ("packer.errors", "PackerError"),
                ("runtime.errors", "FlowError"))


class CliError(Exception):
    """A failure the user can fix; printed as one line, exit code 1."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types shown as `error: message` with exit code 1 (no traceback).

    Only the error roots of packages already imported: an error of a package the command never
    loaded cannot have been raised, and importing hub_store only to name its errors would cost
    an admin command a tenth of its start-up.
    """
    found: list[type[BaseException]] = [CliError, OSError]
    for module, name in _ERROR_ROOTS:
        if (loaded := sys.modules.get(module)) is not None:
            found.append(getattr(loaded, name))
    return tuple(found)
