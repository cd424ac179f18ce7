"""Exception groups from nurseries: made plain where there is only one error to report, and
stopped at the boundary of one caller's work (`boundary`) so they never end anyone else's."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

E = TypeVar("E", bound=BaseException)


def leaves(group: BaseExceptionGroup[E]) -> Iterator[E]:
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


def split_cancelled(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """(the part to re-raise, the errors) of `exc`: Cancelled, KeyboardInterrupt and other
    BaseExceptions that are not Exceptions always travel on; Exceptions are for the caller."""
    if isinstance(exc, BaseExceptionGroup):
        errors, travel = exc.split(Exception)
        return travel, errors
    if isinstance(exc, Exception):
        return None, exc
    return exc, None


def describe(exc: BaseException) -> str:
    """One line naming every error in `exc` (a group's leaves joined with '; ')."""
    found = list(leaves(exc)) if isinstance(exc, BaseExceptionGroup) else [exc]
    return "; ".join(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__ for e in found)


@contextmanager
def boundary(on_error: Callable[[BaseException], None]) -> Iterator[None]:
    """Stop any Exception (a group of them included) here and hand it to `on_error`.

    For the work of one caller inside a long-lived nursery (a tunnelled request, a socket):
    its failure, whatever its type or nesting, must end only that work. Cancelled and
    other BaseExceptions are re-raised untouched (as a group if they came in one), so a
    cancelled nursery still ends.
    """
    try:
        yield
    except BaseException as exc:
        travel, errors = split_cancelled(exc)
        if errors is not None:
            on_error(errors)
        if travel is not None:
            if travel is exc:
                raise
            raise travel from None
