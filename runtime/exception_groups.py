"""Exception groups from nurseries, made plain where there is only one error to report."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:
    """Every non-group exception inside `group`, depth first."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from leaves(exc)
        else:
            yield exc


@contextmanager
def collapse() -> Iterator[None]:
    """Re-raise a group that holds a single exception as that exception.

    Trio wraps whatever leaves a nursery in an ExceptionGroup; a component whose
    only failure mode is one domain error (TunnelClosed, JoinRefused, ...)
    should let its callers write a plain `except`. Groups of several errors
    (Cancelled included) pass through unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        found = list(leaves(group))
        if len(found) == 1:
            raise found[0] from None
        raise
