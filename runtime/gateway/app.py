"""The gateway's bare ASGI app (no framework on the hot path) and the front door in front of quart.

Per request: authenticate the key, read the body (capped, under a deadline; a slot of the
key's concurrency is taken first when the body is not there at once), validate just enough
to name the model, hand it to the dispatcher (runtime/dispatch: allow-list, slot and rates,
replica, retry, usage) and relay the reply chunk by chunk. A client that goes away cancels
the call, which resets the tunnel stream and closes the worker's connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from runtime.api import bearer_ok
from runtime.dispatch import Call, Dispatcher, Principal
from runtime.exception_groups import collapse
from runtime.gateway import openapi
from runtime.gateway.audio import AUDIO_FIRST_BYTE_TIMEOUT, AUDIO_UPLOADS, DEFAULT_MAX_AUDIO_BODY
from runtime.gateway.body import (
    ARRIVED_WAIT,
    DEFAULT_BODY_TIMEOUT,
    read_arrived,
    read_body,
    refuse_declared_length,
)
from runtime.gateway.errors import GatewayError
from runtime.gateway.validate import ENDPOINTS, parse_body
from runtime.tunnel.coalesce import Pacer, gather
from runtime.tunnel.errors import TunnelError

log = logging.getLogger("flowctl.gateway")
MAX_BODY = 4 << 20  # chat bodies are far smaller; audio uploads have their own limit (max_audio_body)
DEFAULT_IDLE_TIMEOUT = 300.0
FORWARDED = frozenset({b"content-type", b"accept", b"x-request-id", b"openai-organization"})
# The worker's own; hypercorn writes the gateway's Date, and two Date headers confuse caches.
NOT_RELAYED = frozenset({"date", "server"})
PATHS = frozenset({"/v1/models", "/metrics", "/v1/openapi.json", *ENDPOINTS})

Authenticate = Callable[[str | None], Awaitable[Principal]]
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
    """The OpenAI-compatible API (an ASGI app for PATHS); every model call goes through the dispatcher."""

    def __init__(self, dispatcher: Dispatcher, authenticate: Authenticate, *, max_body: int = MAX_BODY,
                 body_timeout: float = DEFAULT_BODY_TIMEOUT, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 metrics_key_hashes: tuple[str, ...] = (), max_audio_body: int = DEFAULT_MAX_AUDIO_BODY,
                 audio_first_byte_timeout: float = AUDIO_FIRST_BYTE_TIMEOUT, arrived_wait: float = ARRIVED_WAIT) -> None:
        if not audio_first_byte_timeout > 0:
            raise ValueError(f"audio_first_byte_timeout={audio_first_byte_timeout!r} is not a positive number of seconds")
        self.dispatcher = dispatcher
        # A transcription's first byte is its whole answer: its uploads wait this long (or the
        # dispatcher's first-byte timeout, when larger).
        self.audio_first_byte_timeout = audio_first_byte_timeout
        self.authenticate = authenticate
        self.max_body = max_body
        self.max_audio_body = max_audio_body
        self.body_timeout = body_timeout
        self.arrived_wait = arrived_wait  # a body not whole by then is read holding a slot (gateway/body.py)
        # sha256 of the keys that may read /metrics (the admin key, a metrics token); none: nobody.
        self.metrics_key_hashes = metrics_key_hashes
        self.idle_timeout = idle_timeout
        self.limiter = dispatcher.limiter
        self.metrics = dispatcher.metrics
        self.router = dispatcher.router

    def health(self) -> dict[str, Any]:
        """The gateway's part of /health."""
        return {"status": "ok", "models": len(self.dispatcher.scheduler.models()),
                "in_flight": sum(self.router.in_flight.values())}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        reply = _Reply(send)
        try:
            await self._handle(scope, receive, reply)
        except GatewayError as exc:
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

    async def _handle(self, scope: dict[str, Any], receive: Any, reply: _Reply) -> None:
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
        if path == "/v1/models":
            _only(method, "GET")
            await reply.whole(200, self._models(who), [_JSON])
            return
        _only(method, "POST")
        limit = self.max_audio_body if path in AUDIO_UPLOADS else self.max_body
        refuse_declared_length(headers, limit)
        content_type = headers.get(b"content-type", b"application/json").decode("latin-1")
        # A body sent with its headers is here at once: the slot and the rates are then taken in
        # one limiter call once it names the model. Else the slot is taken before the rest is read
        # (a slow upload counts against the key's max_concurrency) and the rates once it is whole.
        async with contextlib.AsyncExitStack() as admission:
            try:
                parts, whole = await read_arrived(receive, limit=limit, wait=self.arrived_wait)
                if whole:
                    parsed = parse_body(path, b"".join(parts), content_type)
            except GatewayError:
                await self.dispatcher.check_slot_free(who)  # a full key's 429 first, as if its slot came first
                raise
            if whole:
                await admission.enter_async_context(self.dispatcher.admitted(who, parsed.model))
            else:
                await admission.enter_async_context(self.dispatcher.slot(who))
                parts = [await read_body(receive, limit=limit, body_timeout=self.body_timeout, start=parts)]
                parsed = parse_body(path, parts[0], content_type)
            raw = b"".join(parts)
            forward = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k in FORWARDED]
            target = path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
            with collapse():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
                    wait = (max(self.audio_first_byte_timeout, self.dispatcher.first_byte_timeout)
                            if path in AUDIO_UPLOADS else None)
                    call = await self.dispatcher.send(who, parsed.model, target, raw, headers=forward, via="http",
                                                      first_byte_timeout=wait, admitted=whole)
                    async with call:
                        await self._relay(parsed.model, call, reply)
                    nursery.cancel_scope.cancel()

    def _check_metrics_key(self, headers: dict[bytes, bytes]) -> None:
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if not any(bearer_ok(auth, digest) for digest in self.metrics_key_hashes):
            raise GatewayError(401, "/metrics needs the admin key or the metrics token (Authorization: Bearer)",
                               "invalid_metrics_key")

    def _models(self, who: Principal) -> bytes:
        data = [{"id": model, "object": "model", "created": 0, "owned_by": routes[0].replica.service_id}
                for model, routes in self.dispatcher.scheduler.models().items() if who.allows(model)]
        return json.dumps({"object": "list", "data": data}).encode()

    async def _relay(self, model: str, call: Call, reply: _Reply) -> None:
        """Stream the reply to the client; fast chunks in gathered batches (see coalesce)."""
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in call.headers
                   if k.lower() not in NOT_RELAYED]
        await reply.start(call.status, headers)
        send = reply.send
        receive_some = call.receive_some
        pacer = Pacer()
        failure: str | None = None
        try:
            chunk = await receive_some()
            while chunk:
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
        if failure is not None:
            log.warning("gateway: the replica of %s %s; the reply is cut short", model, failure)
            self.metrics.upstream_failures += 1
            if call.sse:  # an OpenAI-style error event: clients raise it instead of taking a short answer
                error = GatewayError(502, f"the replica of {model!r} {failure}", "upstream_error")
                await send({"type": "http.response.body", "body": b"\n\ndata: " + error.body() + b"\n\n",
                            "more_body": True})
            return  # without the body's end: the client sees the reply end early, never as complete
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _cancel_on_disconnect(receive: Any, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def _only(method: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise GatewayError(405, f"method {method} is not allowed here (use {allowed})", "method_not_allowed")


class FrontDoor:
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
