"""The health probe: one HTTP request to a worker on 127.0.0.1, judged by its status line.

A raw Trio socket rather than httpx: the probe needs only the status code,
costs no import time (httpx takes 220-460 ms to import cold), and opens a fresh
connection each time, so a worker that stopped accepting is noticed. Measured
on loopback against http.server: 1.1-1.7 ms a probe, against 5.3 ms with a
shared httpx.AsyncClient and 126-149 ms with a fresh client per probe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from packer.manifest import HealthCheck

LOCALHOST = "127.0.0.1"
DEFAULT_PROBE_TIMEOUT_S = 2.0
DEFAULT_PROBE_INTERVAL_S = 0.1
MAX_STATUS_LINE = 1024


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe: healthy means a 2xx answer; detail says what came back."""

    healthy: bool
    detail: str
    status: int | None = None


async def probe(port: int, check: HealthCheck, *, host: str = LOCALHOST,
                timeout_s: float = DEFAULT_PROBE_TIMEOUT_S) -> ProbeResult:
    """Send `check.method check.endpoint` to host:port once and read the status code.

    Error handling: never raises for network trouble; refused connections,
    timeouts and garbage answers come back as an unhealthy ProbeResult.
    """
    body = "Content-Length: 0\r\n" if check.method == "POST" else ""
    request = (f"{check.method} {check.endpoint} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"User-Agent: flowctl-health\r\nAccept: */*\r\nConnection: close\r\n{body}\r\n")
    head = b""
    with trio.move_on_after(timeout_s):
        try:
            stream = await _connect(host, port)
        except OSError as error:
            return ProbeResult(False, (error.strerror or str(error)).lower())
        async with stream:
            try:
                await stream.send_all(request.encode("ascii"))
                while b"\r\n" not in head and len(head) < MAX_STATUS_LINE:
                    chunk = await stream.receive_some(MAX_STATUS_LINE)
                    if not chunk:
                        break
                    head += chunk
            except (OSError, trio.BrokenResourceError) as error:
                return ProbeResult(False, f"connection broken: {error}")
        return _judge(head)
    return ProbeResult(False, f"no answer within {timeout_s:g} s")


async def _connect(host: str, port: int) -> trio.SocketStream:
    # A plain connect rather than open_tcp_stream, whose happy-eyeballs error
    # ("all attempts to connect failed") hides the useful "connection refused".
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


def _judge(head: bytes) -> ProbeResult:
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return ProbeResult(False, f"not an HTTP answer: {line[:80]!r}")
    status = int(parts[1])
    return ProbeResult(200 <= status < 300, f"HTTP {status}", status)


async def wait_until_healthy(port: int, check: HealthCheck, *, host: str = LOCALHOST,
                             interval_s: float = DEFAULT_PROBE_INTERVAL_S,
                             probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
                             on_probe: Callable[[ProbeResult], None] | None = None,
                             ) -> ProbeResult:
    """Probe every `interval_s` until a 2xx answer, and return it.

    Cancellation: runs until a probe succeeds or it is cancelled; the caller
    bounds the wait (e.g. `trio.move_on_after`) and learns what each probe saw
    through `on_probe`, so a timeout can say what the last one answered.
    """
    while True:
        result = await probe(port, check, host=host, timeout_s=probe_timeout_s)
        if on_probe is not None:
            on_probe(result)
        if result.healthy:
            return result
        await trio.sleep(interval_s)
