"""Gateway benchmark: direct to the echo worker vs through the gateway + tunnel, in one run.

    python bench/gateway.py [--duration 5]

Stopping it (Ctrl-C, SIGTERM from `timeout`, or the bench being killed) stops every process
it started: children run in sessions of their own, are stopped group by group on the way
out, and get SIGTERM from the kernel if the bench dies without a chance to clean up.

Measures, with the same load generator (httpx on trio, in this process): non-streaming
req/s, p50 and p99 at c=1 and c=32; one stream's relayed tokens/s (read by httpx line by line,
which is the client's ceiling, and by a raw h11 reader, which is the relay's); the rate limiter's
accepted rate at 10x a key's rpm; the framework floors: a bare ASGI hello world on
hypercorn's Trio worker at c=1, measured beside the c=1 figures (the cost of one hypercorn hop,
which the gateway's path adds at least once on top of the direct one; the echo worker is
itself a bare ASGI app on hypercorn), and a quart-trio hello world at c=50; LiteLLM's proxy in front of the same worker when `just litellm-venv`
has installed it into bench/.litellm (otherwise it prints how to get it), with the ratios
against it: gateway req/s >= 10x LiteLLM's, and the gateway's added p50 at c=1 (over direct)
<= 1/10 of LiteLLM's. The plane (hub + scheduler + gateway), a node agent and the worker run
in a child process; every child runs in a session of its own and its group is killed at the
end, and each one's output goes to a log whose tail is printed if it fails to start.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._machine import describe, die_with_parent  # noqa: E402
from bench._machine import load as machine_load  # noqa: E402

LITELLM = ROOT / "bench" / ".litellm" / "bin" / "litellm"
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hello there"}]}


# -- the served side (child process) -----------------------------------------------------------

async def _serve(data: Path) -> None:
    from packer import pack_dir
    from runtime.control.messages import ReplicaReport
    from runtime.node.agent import AgentConfig, run_agent
    from runtime.plane import PlaneSettings, serve_control_plane

    env = {**os.environ, "FLOWCTL_PORT": "0", "PYTHONUNBUFFERED": "1", "ECHO_MAX_CONCURRENCY": "64"}
    worker = subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT / "examples" / "echo",  # noqa: ASYNC220
                              env=env, stdout=subprocess.PIPE, preexec_fn=die_with_parent)
    worker_url = worker.stdout.readline().decode().split(" listening on ")[1].split()[0]

    class Executor:  # reports the replica ready at once, pointing at the worker above
        def __init__(self):
            self.running = {}

        def inventory(self):
            return (), tuple(self.running.values())

        def apply(self, assign, hub_url, report):
            self.running = {}
            for a in assign.replicas:
                rep = ReplicaReport(a.replica_id, a.service_id, a.version, a.attempt, "ready", models=("echo",),
                                    max_concurrency=64)
                self.running[a.replica_id] = rep
                report(rep)

        def worker_url(self, replica_id):
            return worker_url if replica_id in self.running else None

    admin = secrets.token_urlsafe(24)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_sigterm, nursery.cancel_scope)
            settings = PlaneSettings(data_dir=data / "plane", port=0, roles=("hub", "scheduler", "gateway"))
            handle = await nursery.start(partial(serve_control_plane, settings, admin_key=admin))
            auth = {"Authorization": f"Bearer {admin}"}
            bundle = await trio.to_thread.run_sync(pack_dir, ROOT / "examples" / "echo", data / "dist")
            async with httpx.AsyncClient(base_url=handle.url, headers=auth, timeout=60) as c:
                await c.put("/api/services/echo/1.0.0", content=bundle.path.read_bytes())
                token = (await c.post("/api/cluster/tokens", json={"name": "bench"})).json()["token"]
                await nursery.start(run_agent, AgentConfig(url=handle.url, token=token, node_id="n", name="n"),
                                    Executor())
                await c.post("/api/deployments", json={"service": "echo", "replicas": 1})
                while not handle.scheduler.routes("echo"):  # noqa: ASYNC110 - set by another task
                    await trio.sleep(0.05)
                await c.post("/api/gateway/tenants", json={"name": "bench"})
                key = (await c.post("/api/gateway/keys", json={"tenant": "bench"})).json()["key"]
                limited = (await c.post("/api/gateway/keys", json={"tenant": "bench", "rpm": 600})).json()["key"]
            print(json.dumps({"gateway": handle.url, "worker": worker_url, "key": key, "limited": limited}),
                  flush=True)
            await trio.sleep_forever()
    finally:
        worker.terminate()
        worker.wait()


async def _cancel_on_sigterm(scope: trio.CancelScope) -> None:
    # The parent stops us with SIGTERM: cancel, so the finally above stops the worker.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


# -- the load generator ------------------------------------------------------------------------

async def load(url: str, path: str, body: dict | None, concurrency: int, duration: float,
               headers: dict | None = None) -> dict:
    """Closed-loop load: `concurrency` clients for `duration` s; req/s, p50 and p99 in ms, statuses."""
    latencies, statuses = [], {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers or {}, timeout=30, limits=limits) as client:
        end = trio.current_time() + duration

        async def one() -> None:
            while trio.current_time() < end:
                began = time.perf_counter()
                r = await (client.post(path, json=body) if body is not None else client.get(path))
                latencies.append(time.perf_counter() - began)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(one)
    latencies.sort()
    return {"rps": len(latencies) / duration, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))], "statuses": statuses}


async def stream_tokens(url: str, key: str | None, tokens: int = 20_000) -> float:
    """Relayed tokens/s of one stream of `tokens` chunks."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {**CHAT, "stream": True, "echo_tokens": tokens}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        began, n = time.perf_counter(), 0
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                n += line.startswith("data: {")
        return n / (time.perf_counter() - began)


async def stream_tokens_raw(url: str, key: str | None, tokens: int = 20_000) -> float:
    """Like `stream_tokens`, read by a raw h11 client in 1 MiB reads, counting events in the
    bytes without parsing lines: a reader far faster than the relay, so the figure is the
    relay's ceiling, not the client's."""
    import h11

    parts = httpx.URL(url)
    body = json.dumps({**CHAT, "stream": True, "echo_tokens": tokens}).encode()
    headers = [("host", f"{parts.host}:{parts.port}"), ("content-type", "application/json"),
               ("content-length", str(len(body)))]
    if key:
        headers.append(("authorization", f"Bearer {key}"))
    conn = h11.Connection(h11.CLIENT)
    with trio.fail_after(120):
        stream = await trio.open_tcp_stream(parts.host, parts.port)
        async with stream:
            began = time.perf_counter()
            await stream.send_all(conn.send(h11.Request(method="POST", target="/v1/chat/completions",
                                                        headers=headers)) + conn.send(h11.Data(data=body))
                                  + conn.send(h11.EndOfMessage()))
            n, tail = 0, b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(1 << 20))
                elif isinstance(event, h11.Response) and event.status_code != 200:
                    raise SystemExit(f"the stream answered {event.status_code}")
                elif isinstance(event, h11.Data):
                    data = tail + bytes(event.data)
                    n += data.count(b"data: {")
                    tail = data[-6:]  # an event split across reads is counted once, whole
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    return n / (time.perf_counter() - began)


async def rate_limiter(url: str, key: str, duration: float) -> dict:
    """Offer ~10x a 600-rpm key's rate; the accepted rate after the initial burst (limit: 10/s)."""
    statuses = []
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        began = trio.current_time()
        end = began + duration

        async def one() -> None:
            while trio.current_time() < end:
                r = await client.post("/v1/embeddings", json={"model": "echo", "input": "x"})
                statuses.append((trio.current_time() - began, r.status_code))
                await trio.sleep(0.08)

        async with trio.open_nursery() as nursery:
            for _ in range(8):  # 8 clients every ~80 ms: ~100/s offered
                nursery.start_soon(one)
    settle = 2.0  # the burst (60 requests) is spent within the first second
    late = [s for t, s in statuses if t >= settle]
    return {"offered_rps": len(statuses) / duration, "accepted_rps": late.count(200) / (duration - settle),
            "limit_rps": 10.0}


BARE_APP = '''
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})
'''

FLOOR_APP = '''
from quart_trio import QuartTrio
app = QuartTrio("floor")
@app.get("/")
async def hello():
    return "hello"
'''


def _spawn(args: list[str], cwd: Path, log: Path, env: dict | None = None, *,
           stdout_pipe: bool = False) -> subprocess.Popen:
    """A child in a session of its own (its whole group is stopped at the end), output in `log`."""
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(args, cwd=cwd, env={**os.environ, **(env or {})}, start_new_session=True,
                                stdout=subprocess.PIPE if stdout_pipe else out, stderr=out,
                                preexec_fn=die_with_parent)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _tail(proc: subprocess.Popen, lines: int = 20) -> str:
    text = proc.log.read_text(errors="replace").splitlines()  # type: ignore[attr-defined]
    return "\n".join(f"    {line}" for line in text[-lines:])


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, a grace period, then SIGKILL to the process and everything in its group."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever it started and left behind
    except ProcessLookupError:
        pass


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_http(url: str, proc: subprocess.Popen, limit_s: float = 120.0) -> None:
    """Until `url` answers 200; SystemExit with the end of the process's log if it exits or is late."""
    async with httpx.AsyncClient(timeout=2) as client:
        with trio.move_on_after(limit_s):
            while proc.poll() is None:
                try:
                    if (await client.get(url)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.2)
    raise SystemExit(f"{url} did not come up (exit status {proc.poll()}); the end of its log:\n{_tail(proc)}")


def _row(name: str, r: dict) -> None:
    print(f"  {name:<34} {r['rps']:8.0f} req/s   p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:6.2f} ms"
          f"   {r['statuses']}")


async def main(duration: float) -> None:
    """Run the whole bench; SIGTERM cancels it like Ctrl-C, so the children are stopped."""
    print(describe())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_sigterm, nursery.cancel_scope)
        await _bench(duration)
        nursery.cancel_scope.cancel()
    print(f"after: {machine_load()}")


async def _bench(duration: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
    served = _spawn([sys.executable, __file__, "--serve", str(tmp)], ROOT, tmp / "served.log", stdout_pipe=True)
    procs = [served]
    try:
        line = await trio.to_thread.run_sync(served.stdout.readline)
        if not line:
            raise SystemExit(f"the served side exited with {served.wait()}; the end of its log:\n{_tail(served)}")
        info = json.loads(line)
        auth = {"Authorization": f"Bearer {info['key']}"}
        bare_port = _free_port()
        (tmp / "bare.py").write_text(BARE_APP)
        bare_proc = _spawn([sys.executable, "-m", "hypercorn", "--worker-class", "trio", "-b",
                            f"127.0.0.1:{bare_port}", "bare:app"], tmp, tmp / "bare.log")
        procs.append(bare_proc)
        await _wait_http(f"http://127.0.0.1:{bare_port}/", bare_proc)
        print("non-streaming chat, same load generator:")
        results = {}
        results[("bare", 1)] = await load(f"http://127.0.0.1:{bare_port}", "/", None, 1, duration)
        _row("bare ASGI hello world c=1", results[("bare", 1)])
        for c in (1, 32):
            results[("direct", c)] = await load(info["worker"], "/v1/chat/completions", CHAT, c, duration)
            _row(f"direct to worker   c={c}", results[("direct", c)])
            results[("gateway", c)] = await load(info["gateway"], "/v1/chat/completions", CHAT, c, duration, auth)
            _row(f"gateway + tunnel   c={c}", results[("gateway", c)])
        added = results[("gateway", 1)]["p50_ms"] - results[("direct", 1)]["p50_ms"]
        share = results[("gateway", 32)]["rps"] / results[("direct", 32)]["rps"]
        print(f"  added p50 at c=1: {added:.2f} ms (target <= 1); gateway/direct at c=32: {share:.2f} (target >= 0.5)")
        bare = results[("bare", 1)]["p50_ms"]
        print(f"  floor: one bare hypercorn hop (hello world) c=1 p50 {bare:.2f} ms; the gateway adds "
              f"{added / bare:.2f} of those (its path: hypercorn hop + tunnel + the node's request to the worker)")
        direct_tps = await stream_tokens(info["worker"], None)
        gateway_tps = await stream_tokens(info["gateway"], info["key"])
        print(f"one stream of 20,000 tokens, httpx lines: direct {direct_tps:,.0f} tok/s, gateway "
              f"{gateway_tps:,.0f} tok/s (client-bound: the direct path is the client's ceiling)")
        direct_raw = await stream_tokens_raw(info["worker"], None)
        gateway_raw = await stream_tokens_raw(info["gateway"], info["key"])
        print(f"one stream of 20,000 tokens, raw h11 reader: direct {direct_raw:,.0f} tok/s, gateway "
              f"{gateway_raw:,.0f} tok/s (target >= 20,000; direct here is the worker's own rate, which "
              "bounds the relay's)")
        limiter = await rate_limiter(info["gateway"], info["limited"], max(14.0, 2 * duration))
        error = abs(limiter["accepted_rps"] - limiter["limit_rps"]) / limiter["limit_rps"]
        print(f"rate limiter at 600 rpm, offered {limiter['offered_rps']:.0f}/s: accepted "
              f"{limiter['accepted_rps']:.2f}/s (limit 10/s, off by {100 * error:.1f}%, target <= 5%)")

        port = _free_port()
        (tmp / "floor.py").write_text(FLOOR_APP)
        floor_proc = _spawn([sys.executable, "-m", "hypercorn", "--worker-class", "trio", "-b",
                             f"127.0.0.1:{port}", "floor:app"], tmp, tmp / "floor.log")
        procs.append(floor_proc)
        await _wait_http(f"http://127.0.0.1:{port}/", floor_proc)
        floor = await load(f"http://127.0.0.1:{port}", "/", None, 50, duration)
        _row("framework floor quart-trio c=50", floor)
        gw50 = await load(info["gateway"], "/v1/chat/completions", CHAT, 50, duration, auth)
        _row("gateway + tunnel   c=50", gw50)
        print(f"  gateway / floor: {gw50['rps'] / floor['rps']:.2f} (target >= 0.5)")

        if not LITELLM.exists():
            print("LiteLLM peer: not installed; run `just litellm-venv` (installs litellm[proxy] into bench/.litellm)")
            return
        lite = await litellm_peer(tmp, info["worker"], duration, procs)
        print("LiteLLM proxy in front of the same worker (no database; master key only):")
        for c in (1, 32):
            _row(f"litellm proxy      c={c}", lite[c])
        lite_added = lite[1]["p50_ms"] - results[("direct", 1)]["p50_ms"]
        for c in (1, 32):
            print(f"  gateway / litellm req/s at c={c}: {results[('gateway', c)]['rps'] / lite[c]['rps']:.1f}x "
                  "(target >= 10x)")
        print(f"  added p50 at c=1: gateway {added:.2f} ms, litellm {lite_added:.2f} ms: "
              f"{added / lite_added:.3f} of litellm's (target <= 0.1)")
    finally:
        for p in procs:
            _stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


async def litellm_peer(tmp: Path, worker_url: str, duration: float, procs: list) -> dict[int, dict]:
    """Start LiteLLM's proxy in front of the worker (logged to tmp/litellm.log); its c=1 and c=32 figures."""
    port = _free_port()
    config = tmp / "litellm.yaml"
    config.write_text("model_list:\n  - model_name: echo\n    litellm_params:\n      model: openai/echo\n"
                      f"      api_base: {worker_url}/v1\n      api_key: none\n"
                      "litellm_settings:\n  telemetry: false\n  drop_params: true\n")
    # A strong master key (it refuses weak ones); no DATABASE_URL: keys are the master key only.
    master = "sk-" + secrets.token_urlsafe(32)
    env = {"LITELLM_MASTER_KEY": master, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "DISABLE_SCHEMA_UPDATE": "True", "LITELLM_TELEMETRY": "False"}
    proc = _spawn([str(LITELLM), "--config", str(config), "--port", str(port), "--host", "127.0.0.1"],
                  tmp, tmp / "litellm.log", env)
    procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    await _wait_http(f"{url}/health/liveliness", proc)
    auth = {"Authorization": f"Bearer {master}"}
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as client:
        check = await client.post("/v1/chat/completions", json=CHAT)
    if check.status_code != 200 or check.json()["choices"][0]["message"]["content"] != "hello there":
        raise SystemExit(f"litellm answered {check.status_code}: {check.text[:300]}\n{_tail(proc)}")
    return {c: await load(url, "/v1/chat/completions", CHAT, c, duration, auth) for c in (1, 32)}


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load figure (default 5)")
    parser.add_argument("--serve", type=Path, metavar="DIR", help=argparse.SUPPRESS)  # the child's side
    return parser.parse_args()


if __name__ == "__main__":
    args = _args()
    if args.serve:
        trio.run(_serve, args.serve)
    else:
        try:
            trio.run(main, args.duration)
        except BaseExceptionGroup as group:  # a SystemExit from inside the nursery: its one line
            exits = group.subgroup(SystemExit)
            if exits is None:
                raise
            first: BaseException = exits
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
