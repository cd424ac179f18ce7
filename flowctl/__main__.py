"""Entry point: run the CLI, map user errors to one line and exit code 1."""

from __future__ import annotations

import sys


def main() -> None:
    """Run flowctl; exit 0 ok, 1 failure the user can fix, 2 usage error, 130 interrupted.

    Typer's standalone mode already turns usage errors into exit code 2; what
    reaches us here is a library error, shown as one line without a traceback.
    The error types are imported only when an error arrives: importing every
    package's errors on each run would cost start-up time (SystemExit, raised
    by every normal exit, must not trigger that import either).
    """
    # httpx imports its own command-line client on import (click, pygments, rich): ~0.06 s
    # of every command that talks HTTP. flowctl never runs it; httpx falls back to a stub.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from flowctl.app import app

    try:
        app()
    except KeyboardInterrupt:
        from flowctl.console import fail

        fail("interrupted")
        sys.exit(130)
    except Exception as exc:
        from flowctl.console import fail
        from flowctl.errors import user_errors

        if not isinstance(exc, user_errors()):
            raise
        fail(one_line(exc))
        sys.exit(1)


def one_line(exc: BaseException) -> str:
    """The exception as a single line for the terminal."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or exc}: {exc.filename}"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    main()
