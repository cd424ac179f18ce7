"""What every bench prints beside its figures: the machine, its SHA extensions, its load.

Figures from a shared 2-core box mean little without the load they were taken under, and
hashing figures depend on whether the CPU has SHA extensions, so each bench prints
`describe()` before it starts and `load()` again when it ends.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path


def _cpuinfo() -> tuple[str, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU", set()
    model, flags = "unknown CPU", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (children excluded), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    """The 1, 5 and 15 minute load averages as one short string."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def describe() -> str:
    """One line: CPU model, cores, SHA extensions (sha_ni / ARMv8 sha2) and the load now."""
    model, flags = _cpuinfo()
    sha = "yes" if {"sha_ni", "sha2"} & flags else "no"
    return f"machine: {model}, {os.cpu_count()} cores, SHA extensions: {sha}, {load()}"


def die_with_parent() -> None:
    """A `preexec_fn`: the child gets SIGTERM when the bench dies, even by SIGKILL (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class machine_report:
    """`with machine_report():` prints `describe()` on entry and the load averages on exit.

    Silent when the bench was only asked for `--help`; on stderr when it was asked for
    `--json`, so stdout stays one JSON document. Inside it, SIGTERM (what `timeout`
    sends) is turned into SIGINT, so a bench stopped that way runs its `finally` blocks and
    stops what it started, exactly as after Ctrl-C (Trio's own SIGINT handling included).
    """

    def __init__(self) -> None:
        self.quiet = bool({"-h", "--help"} & set(sys.argv[1:]))
        self.out = sys.stderr if "--json" in sys.argv[1:] else sys.stdout

    def __enter__(self) -> None:
        # A shell starts background jobs with SIGINT ignored; Python then leaves it ignored,
        # and the SIGTERM below would do nothing. Restore Python's own handler (Trio takes
        # it over from there).
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
        if not self.quiet:
            print(describe(), file=self.out, flush=True)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if not self.quiet:
            print(f"after: {load()}", file=self.out, flush=True)
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            raise SystemExit("interrupted: everything the bench started was stopped") from None
