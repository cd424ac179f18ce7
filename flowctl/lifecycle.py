"""Running a long-lived command: Trio, a clean stop on SIGINT/SIGTERM, no traceback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


def run_until_signal(main: Callable[[Any], Awaitable[None]]) -> None:
    """Run `await main(nursery)` until it returns or a SIGINT/SIGTERM arrives, then drain.

    `main` starts its long-running parts in the nursery it is given; on a signal the
    nursery is cancelled, so servers drain and child processes are stopped before exit.
    """
    import signal

    import trio

    from flowctl.console import err
    from runtime.exception_groups import collapse

    async def root() -> None:
        # The receiver stays open until everything stopped: a second signal while draining (a
        # second Ctrl-C, or `timeout` signalling the child and then its group) must not kill
        # the process with the default action and leave its workers behind.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals, collapse():
            async with trio.open_nursery() as nursery:

                async def watch_signals() -> None:
                    async for signum in signals:
                        err.print(f"{signal.Signals(signum).name}: stopping")
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(watch_signals)
                await main(nursery)

    try:
        trio.run(root)
    except KeyboardInterrupt:
        err.print("stopped")
