"""The gateway's bare ASGI app (no framework on the hot path) and the dispatcher in front of quart.

Per request: authenticate the key, take one of its concurrent-request slots, read the
body (capped, under a deadline), validate just enough to route, check the key's model
allow-list and rate limits, pick a replica, send the request through the node's tunnel,
relay the reply chunk by chunk. A failure before the first
byte reached the client is retried once on another replica; a client that goes away
resets the tunnel stream, which closes the worker's connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from runtime.exception_groups import collapse
from runtime.gateway import openapi
from runtime.gateway.body import DEFAULT_BODY_TIMEOUT, read_body, refuse_declared_length
from runtime.gateway.errors import GatewayError
from runtime.gateway.limits import Limiter, Principal
from runtime.gateway.metrics import Metrics
from runtime.gateway.router import Router
from runtime.gateway.validate import ENDPOINTS, parse_body
from runtime.hub.auth import bearer_ok
from runtime.scheduler.service import Scheduler
from runtime.tunnel.coalesce import Pacer, gather
from runtime.tunnel.errors import TunnelError
from runtime.tunnel.http import TunnelResponse, send_request

log = logging.getLogger("flowctl.gateway")
MAX_BODY = 4 << 20  # audio uploads fit; chat bodies are far smaller
DEFAULT_FIRST_BYTE_TIMEOUT = 120.0
DEFAULT_IDLE_TIMEOUT = 300.0
MAX_USAGE_SCAN = 8 << 20  # a non-streamed body larger than this is relayed without reading usage
FORWARDED = frozenset({b"content-type", b"accept", b"x-request-id", b"openai-organization"})
# The worker's own; hypercorn writes the gateway's Date, and two Date headers confuse caches.
NOT_RELAYED = frozenset({"date", "server"})
PATHS = frozenset({"/v1/models", "/metrics", "/v1/openapi.json", *ENDPOINTS})

Authenticate = Callable[[str | None], Awaitable[Principal]]
UsageSink = Callable[[Principal, str, int, int], None]
_JSON = (b"content-type", b"application/json")


class _Reply:
    """The ASGI send side, remembering whether the response has started."""

    def __init__(self, send: Any) -> None:
        self.send = send
        self.status = 0

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def whole(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await self.start(status, [*headers, (b"content-length", str(len(body)).encode())])
        await self.send({"type": "http.response.body", "body": body})


class Gateway:
    """The OpenAI-compatible API over the scheduler's routes (an ASGI app for PATHS)."""

    def __init__(self, scheduler: Scheduler, authenticate: Authenticate, *, on_usage: UsageSink | None = None,
                 max_body: int = MAX_BODY, body_timeout: float = DEFAULT_BODY_TIMEOUT,
                 first_byte_timeout: float = DEFAULT_FIRST_BYTE_TIMEOUT,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, metrics_key_hashes: tuple[str, ...] = ()) -> None:
        self.scheduler = scheduler
        self.authenticate = authenticate
        self.on_usage = on_usage
        self.max_body = max_body
        self.body_timeout = body_timeout
        # sha256 of the keys that may read /metrics (the admin key, a metrics token); none: nobody.
        self.metrics_key_hashes = metrics_key_hashes
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.router = Router()
        self.limiter = Limiter()
        self.metrics = Metrics()

    def health(self) -> dict[str, Any]:
        """The gateway's part of /health."""
        return {"status": "ok", "models": len(self.scheduler.models()),
                "in_flight": sum(self.router.in_flight.values())}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        reply = _Reply(send)
        began = trio.current_time()
        labels = {"model": "", "tenant": ""}
        try:
            await self._handle(scope, receive, reply, labels)
        except GatewayError as exc:
            if labels["tenant"] and exc.status == 429:
                self.metrics.reject(labels["tenant"], exc.code)
            if not reply.status:
                await reply.whole(exc.status, exc.body(), exc.headers())
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        except Exception:
            # Never a 500 with a traceback: log it, answer 502 if nothing was sent yet.
            log.exception("gateway: unexpected error on %s", scope.get("path"))
            if not reply.status:
                await reply.whole(502, GatewayError(502, "the gateway failed to relay this request",
                                                    "gateway_error").body(), [_JSON])
        finally:
            if labels["model"]:
                self.metrics.observe(labels["model"], labels["tenant"], reply.status or 499,
                                     trio.current_time() - began)

    async def _handle(self, scope: dict[str, Any], receive: Any, reply: _Reply, labels: dict[str, str]) -> None:
        path, method = scope["path"], scope["method"]
        headers = dict(scope["headers"])  # two Authorization headers never get here (runtime/http/guard.py)
        if path == "/metrics":
            _only(method, "GET")
            self._check_metrics_key(headers)
            await reply.whole(200, self.metrics.render().encode(),
                              [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])
            return
        if path == "/v1/openapi.json":
            _only(method, "GET")
            await reply.whole(200, openapi.document(), [_JSON])
            return
        auth = headers.get(b"authorization")
        who = await self.authenticate(auth.decode("latin-1") if auth is not None else None)
        labels["tenant"] = who.tenant
        if path == "/v1/models":
            _only(method, "GET")
            await reply.whole(200, self._models(who), [_JSON])
            return
        _only(method, "POST")
        refuse_declared_length(headers, self.max_body)
        # The slot is taken before the body is read: a slow upload counts against the key's
        # max_concurrency. Rates (and tokens) are checked once the body says which model.
        self.limiter.enter(who)
        try:
            await self._complete(who, scope, receive, headers, reply, labels)
        finally:
            self.limiter.release(who)

    async def _complete(self, who: Principal, scope: dict[str, Any], receive: Any, headers: dict[bytes, bytes],
                        reply: _Reply, labels: dict[str, str]) -> None:
        """Read, check, route and relay one request that holds a concurrency slot."""
        path = scope["path"]
        raw = await read_body(receive, limit=self.max_body, body_timeout=self.body_timeout)
        parsed = parse_body(path, raw, headers.get(b"content-type", b"application/json").decode("latin-1"))
        if not who.allows(parsed.model):
            raise GatewayError(403, f"this key may not use the model {parsed.model!r}", "model_not_allowed",
                               param="model")
        routes = self.scheduler.routes(parsed.model)
        if not routes:
            if any(parsed.model in d["models"] for d in self.scheduler.status()["deployments"]):
                raise GatewayError(503, f"no replica of {parsed.model!r} is ready; retry shortly",
                                   "no_ready_replica", retry_after=5)
            raise GatewayError(404, f"the model {parsed.model!r} does not exist", "model_not_found",
                               param="model")
        labels["model"] = parsed.model
        self.limiter.admit(who)
        forward = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k in FORWARDED]
        target = path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
        with collapse():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
                await self._forward(who, parsed.model, target, forward, raw, reply, routes)
                nursery.cancel_scope.cancel()

    def _check_metrics_key(self, headers: dict[bytes, bytes]) -> None:
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if not any(bearer_ok(auth, digest) for digest in self.metrics_key_hashes):
            raise GatewayError(401, "/metrics needs the admin key or the metrics token (Authorization: Bearer)",
                               "invalid_metrics_key")

    def _models(self, who: Principal) -> bytes:
        data = [{"id": model, "object": "model", "created": 0, "owned_by": routes[0].replica.service_id}
                for model, routes in self.scheduler.models().items() if who.allows(model)]
        return json.dumps({"object": "list", "data": data}).encode()

    async def _forward(self, who: Principal, model: str, target: str, headers: list[tuple[str, str]],
                       raw: bytes, reply: _Reply, routes: list) -> None:
        tried: set[str] = set()
        last: GatewayError | None = None
        for attempt in range(2):
            route = self.router.pick(routes, frozenset(tried))
            if route is None:
                break
            tried.add(route.replica.replica_id)
            if attempt:
                self.metrics.retries += 1
            mux = self.scheduler.mux_for(route.node_id)
            if mux is None:
                last = GatewayError(503, "the replica's node is not connected", "node_gone", retry_after=1)
                continue
            with self.router.hold(route):
                try:
                    with trio.fail_after(self.first_byte_timeout):
                        response = await send_request(mux, "POST", target, headers, raw,
                                                      route={"replica_id": route.replica.replica_id})
                        first = await _first_chunk(response)
                except trio.TooSlowError:
                    raise GatewayError(504, f"the model {model!r} did not answer within "
                                       f"{self.first_byte_timeout:g} s", "upstream_timeout") from None
                except TunnelError as exc:
                    last = GatewayError(502, f"the replica failed before answering ({type(exc).__name__})",
                                        "upstream_error")
                    continue
                if response.status in (502, 503) and attempt == 0 and len(routes) > 1:
                    response.close()
                    last = GatewayError(response.status, "the replica could not take the request",
                                        "upstream_error")
                    continue
                try:
                    await self._relay(who, model, response, first, reply)
                finally:
                    response.close()
                return
        raise last or GatewayError(503, f"no replica of {model!r} is available", "no_ready_replica",
                                   retry_after=1)

    async def _relay(self, who: Principal, model: str, response: TunnelResponse, first: bytes | None,
                     reply: _Reply) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers
                   if k.lower() not in NOT_RELAYED]
        sse = any(k.lower() == "content-type" and v.startswith("text/event-stream") for k, v in response.headers)
        counter = _UsageCounter(sse)
        await reply.start(response.status, headers)
        send = reply.send
        receive_some = response.stream.receive_some
        chunk = first
        pacer = Pacer()
        failure: str | None = None
        try:
            while chunk:
                charged = counter.feed(chunk)
                if charged:
                    self.limiter.charge(who, charged)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                pacer.wrote()
                with trio.move_on_after(self.idle_timeout) as idle:
                    chunk = await receive_some()
                if idle.cancelled_caught:
                    failure = f"sent nothing for {self.idle_timeout:g} s"
                    break
                if chunk and pacer.fast():
                    chunk = await gather(receive_some, chunk)
        except TunnelError as exc:
            failure = f"failed mid-reply ({exc})"
        finally:
            # Synchronous, so it runs even when the client went away and the relay was cancelled.
            prompt, completion = counter.usage()
            self.limiter.charge(who, prompt + completion - counter.charged)
            self.metrics.count_tokens(model, who.tenant, prompt, completion)
            if self.on_usage is not None and response.status < 400:
                self.on_usage(who, model, prompt, completion)
        if failure is not None:
            log.warning("gateway: the replica of %s %s; the reply is cut short", model, failure)
            self.metrics.upstream_failures += 1
            if sse:  # an OpenAI-style error event: clients raise it instead of taking a short answer
                error = GatewayError(502, f"the replica of {model!r} {failure}", "upstream_error")
                await send({"type": "http.response.body", "body": b"\n\ndata: " + error.body() + b"\n\n",
                            "more_body": True})
            return  # without the body's end: the client sees the reply end early, never as complete
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _UsageCounter:
    """Tokens of a reply: the worker's `usage` when it reports one, else one per streamed chunk."""

    def __init__(self, sse: bool) -> None:
        self.sse = sse
        self.charged = 0
        self.chunks = 0
        self.reported: tuple[int, int] | None = None
        self._buffer = bytearray()
        self._tail = b""

    def feed(self, chunk: bytes) -> int:
        """Account `chunk`; returns the tokens to charge now (streams are charged as they go)."""
        if not self.sse:
            if len(self._buffer) + len(chunk) <= MAX_USAGE_SCAN:
                self._buffer += chunk
            return 0
        data = self._tail + chunk
        lines = data.split(b"\n")
        self._tail = lines.pop()
        new = 0
        for line in lines:
            if not line.startswith(b"data:") or line.startswith(b"data: [DONE]"):
                continue
            if b'"usage"' in line:
                self._read_usage(line[5:])
            if b'"choices": []' not in line and b'"choices":[]' not in line:
                new += 1
        self.chunks += new
        self.charged += new
        return new

    def _read_usage(self, payload: bytes) -> None:
        try:
            usage = json.loads(payload).get("usage")
            if isinstance(usage, dict):
                self.reported = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        except (ValueError, TypeError, AttributeError):
            pass

    def usage(self) -> tuple[int, int]:
        """(prompt, completion) tokens."""
        if not self.sse and self._buffer:
            self._read_usage(bytes(self._buffer))
        return self.reported or (0, self.chunks)


async def _first_chunk(response: TunnelResponse) -> bytes | None:
    """The first body chunk (None for an empty body); a reset before it raises TunnelError."""
    return await response.stream.receive_some() or None


async def _cancel_on_disconnect(receive: Any, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def _only(method: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise GatewayError(405, f"method {method} is not allowed here (use {allowed})", "method_not_allowed")


class GatewayDispatcher:
    """ASGI app in front of the quart app: gateway paths and /health here, the rest to `fallback`."""

    def __init__(self, gateway: Gateway | None, fallback: Any, health: Callable[[], dict] | None = None,
                 extra: Any = None) -> None:
        self.gateway = gateway
        self.fallback = fallback
        self.health = health
        self.extra = extra  # an ASGI app for /api/gateway/* (the admin API)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if self.gateway is not None and path in PATHS:
                await self.gateway(scope, receive, send)
                return
            if self.extra is not None and path.startswith("/api/gateway/"):
                await self.extra(scope, receive, send)
                return
            if path == "/health" and self.health is not None:
                await _Reply(send).whole(200, json.dumps(self.health()).encode(), [_JSON])
                return
        await self.fallback(scope, receive, send)
