"""The one path from a caller to a replica of a model.

Every model call (the OpenAI gateway, realtime sessions, and the coming jobs and speech
pipeline) goes through `Dispatcher.send`; callers hold no routing code. It owns:

- model lookup: 404 for a model nothing deploys, 503 for one with no ready replica;
- admission: the key's model allow-list, its concurrency slot and its rpm/tpm, against a
  LimitBackend: this process's Limiter, or Redis shared by several planes. A caller that has
  the model in hand takes the slot and the rates together with `admitted` (one Redis call)
  and then calls `send(..., admitted=True)`: the gateway when the body was already there,
  a session's model call outside a turn, a session's opening. A caller that must hold the
  slot before it knows the request takes it with `slot` and `send` checks the rates (two
  calls): the gateway while a slow body arrives (the upload holds a slot, and a 400 or
  404 spends no rpm), a session's turn (one slot for several calls), a batch job's line;
- replica choice: least outstanding requests (power of two choices among many), or the
  caller's `Pin` (a session's utterance group), re-pinned when its replica is gone;
- one retry on another replica while nothing reached the caller yet;
- usage and metrics, with a `via` label (http, session, job), when the `Call` ends.

Cancellation: cancelling `send`, or closing the returned `Call` before its end, resets the
tunnel stream, which cancels the request on the worker.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import trio

from runtime.dispatch.limits import LimitBackend, Limiter, Principal
from runtime.dispatch.metrics import Metrics
from runtime.dispatch.router import Router
from runtime.dispatch.usage import UsageCounter
from runtime.gateway.errors import GatewayError
from runtime.scheduler.service import Route, Scheduler
from runtime.tunnel.errors import TunnelError
from runtime.tunnel.http import TunnelResponse, send_request

DEFAULT_FIRST_BYTE_TIMEOUT = 120.0
VIAS = ("http", "session", "job")

# (who, model, prompt tokens, completion tokens, via, audio seconds)
UsageSink = Callable[[Principal, str, int, int, str, float], None]


@dataclass
class Pin:
    """A caller's sticky replica for one model: a session's utterances stay on it."""

    replica_id: str | None = None
    node_id: str | None = None


class Call:
    """A reply on its way: status and headers now, the body chunk by chunk, usage once it is whole."""

    def __init__(self, dispatcher: Dispatcher, who: Principal, model: str, via: str, route: Route,
                 response: TunnelResponse, first: bytes, began: float, release: Callable[[], None]) -> None:
        self.route = route
        self.status = response.status
        self.headers = response.headers
        self.sse = any(k.lower() == "content-type" and v.startswith("text/event-stream")
                       for k, v in response.headers)
        self._dispatcher = dispatcher
        self._who, self._model, self._via = who, model, via
        self._response = response
        self._pending = first
        self._began = began
        self._release = release
        self._counter = UsageCounter(self.sse, response.headers)
        self._length = _content_length(response.headers)
        self._received = 0
        self._ended = False
        self._closed = False
        self._accounted = False

    async def receive_some(self) -> bytes:
        """The next chunk of the body, b"" at its end; raises TunnelError if the reply broke off."""
        if self._pending:
            chunk, self._pending = self._pending, b""
        else:
            chunk = await self._response.stream.receive_some()
        if not chunk:
            self._ended = True
            self._account()  # before the caller ends its reply: a client that saw it whole sees its usage
            return b""
        charged = self._counter.feed(chunk)
        if charged:
            self._dispatcher.limiter.charge(self._who, charged)
        self._received += len(chunk)
        if self._length is not None and self._received >= self._length:
            self._account()  # the last byte the client waits for is this chunk, sent after we return
        return chunk

    async def body(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk."""
        while chunk := await self.receive_some():
            yield chunk

    async def read(self) -> bytes:
        """The whole body (for small replies)."""
        return b"".join([chunk async for chunk in self.body()])

    def close(self) -> None:
        """End the call: abandon the reply if unfinished, account usage and metrics (once).

        Synchronous, so it runs also when the caller was cancelled.
        """
        if self._closed:
            return
        self._closed = True
        if not self._ended:
            self._response.close()
        self._release()
        self._account()

    def _account(self) -> None:
        """Charge the limiter, count metrics and record usage for this reply (once)."""
        if self._accounted:
            return
        self._accounted = True
        prompt, completion = self._counter.usage()
        d = self._dispatcher
        d.limiter.charge(self._who, prompt + completion - self._counter.charged)
        d.metrics.count_tokens(self._model, self._who.tenant, prompt, completion, via=self._via)
        audio = self._counter.audio_seconds() if self.status < 400 else 0.0
        if audio:
            d.metrics.count_audio(self._model, self._who.tenant, audio, via=self._via)
        d.metrics.observe(self._model, self._who.tenant, self.status, trio.current_time() - self._began,
                          via=self._via)
        if d.on_usage is not None and self.status < 400:
            d.on_usage(self._who, self._model, prompt, completion, self._via, audio)

    async def __aenter__(self) -> Call:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


def _allowed(who: Principal, model: str) -> None:
    """403 unless the key's allow-list covers `model`."""
    if not who.allows(model):
        raise GatewayError(403, f"this key may not use the model {model!r}", "model_not_allowed", param="model")


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    """The reply's Content-Length, None when absent or not a number (a chunked or SSE reply)."""
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value) if value.strip().isdigit() else None
    return None


class Dispatcher:
    """Sends model requests to replicas for every caller (see the module docstring)."""

    def __init__(self, scheduler: Scheduler, *, limiter: LimitBackend | None = None, metrics: Metrics | None = None,
                 on_usage: UsageSink | None = None, first_byte_timeout: float = DEFAULT_FIRST_BYTE_TIMEOUT,
                 rng: random.Random | None = None) -> None:
        self.scheduler = scheduler
        self.limiter: LimitBackend = limiter or Limiter()
        self.metrics = metrics or Metrics()
        self.on_usage = on_usage
        self.first_byte_timeout = first_byte_timeout
        self.router = Router(rng)

    def routes(self, model: str) -> list[Route]:
        """The ready replicas of `model`; 404 if nothing deploys it, 503 if none is ready."""
        routes = self.scheduler.routes(model)
        if routes:
            return routes
        if self.scheduler.deploys(model):
            raise GatewayError(503, f"no replica of {model!r} is ready; retry shortly", "no_ready_replica",
                               retry_after=5)
        raise GatewayError(404, f"the model {model!r} does not exist", "model_not_found", param="model")

    @contextlib.asynccontextmanager
    async def slot(self, who: Principal) -> AsyncIterator[None]:
        """Hold one of the key's and the tenant's concurrent-request slots (429 when none is free)."""
        try:
            held = await self.limiter.take_slot(who)
        except GatewayError as exc:
            self.metrics.reject(who.tenant, exc.code)
            raise
        try:
            yield
        finally:
            self.limiter.give_slot(who, held)

    @contextlib.asynccontextmanager
    async def admitted(self, who: Principal, model: str, *, via: str = "http") -> AsyncIterator[None]:
        """`slot` and `admit` in one limiter call, for a caller that knows the model when it takes the
        slot; then `send(..., admitted=True)`. Refusals as theirs: 404/503, 403, then 429 or 503."""
        began = trio.current_time()
        try:
            self.routes(model)
            _allowed(who, model)
        except GatewayError as exc:
            await self.check_slot_free(who)
            self.metrics.observe(model, who.tenant, exc.status, trio.current_time() - began, via=via)
            raise
        try:
            held = await self.limiter.admit_slot(who)
        except GatewayError as exc:
            self.metrics.reject(who.tenant, exc.code)
            if exc.code in ("rate_limit_exceeded", "tokens_limit_exceeded"):  # as `send` counts them
                self.metrics.observe(model, who.tenant, exc.status, trio.current_time() - began, via=via)
            raise
        try:
            yield
        finally:
            self.limiter.give_slot(who, held)

    async def check_slot_free(self, who: Principal) -> None:
        """The 429 of a key with no free slot (one taken and given back): a request refused before it took
        its slot answers that first, as when the slot comes first. A limiter call on refusals only."""
        async with self.slot(who):
            pass

    async def admit_session(self, who: Principal) -> None:
        """Opening a realtime session counts as one request: a free slot and the key's rpm/tpm, or 429."""
        try:
            held = await self.limiter.admit_slot(who)
        except GatewayError as exc:
            self.metrics.reject(who.tenant, exc.code)
            raise
        self.limiter.give_slot(who, held)

    async def admit(self, who: Principal, model: str) -> None:
        """The key may use `model` now (allow-list, rpm, tpm), or a 403/429 GatewayError."""
        _allowed(who, model)
        try:
            await self.limiter.check(who)
        except GatewayError as exc:
            self.metrics.reject(who.tenant, exc.code)
            raise

    async def send(self, who: Principal, model: str, path: str, body: bytes, *,
                   headers: Iterable[tuple[str, str]] = (), via: str = "http", pin: Pin | None = None,
                   first_byte_timeout: float | None = None, admitted: bool = False) -> Call:
        """Admit (unless the caller holds `admitted`), route and send one request; returns once the
        reply's first byte arrived.

        `first_byte_timeout` overrides the dispatcher's for this call (a transcription answers
        only once the whole file is heard). Error handling: GatewayError (404/503 lookup, 403/429
        admission, 502/503 when no replica could take it, 504 when none answered within the
        first-byte timeout), counted in the metrics.
        """
        began = trio.current_time()
        try:
            routes = self.routes(model)
            if not admitted:
                await self.admit(who, model)
            return await self._attempts(who, model, path, body, list(headers), via, pin, routes, began,
                                        first_byte_timeout or self.first_byte_timeout)
        except GatewayError as exc:
            self.metrics.observe(model, who.tenant, exc.status, trio.current_time() - began, via=via)
            raise
        except trio.Cancelled:
            self.metrics.observe(model, who.tenant, 499, trio.current_time() - began, via=via)
            raise

    async def _attempts(self, who: Principal, model: str, path: str, body: bytes, headers: list[tuple[str, str]],
                        via: str, pin: Pin | None, routes: list[Route], began: float,
                        first_byte_timeout: float) -> Call:
        tried: set[str] = set()
        last: GatewayError | None = None
        for attempt in range(2):
            route = self._choose(routes, pin, frozenset(tried))
            if route is None:
                break
            tried.add(route.replica.replica_id)
            if attempt:
                self.metrics.retries += 1
            stack = contextlib.ExitStack()
            stack.enter_context(self.router.hold(route))
            try:
                with trio.fail_after(first_byte_timeout):
                    response = await send_request(route.link.mux, "POST", path, headers, body,
                                                  route={"replica_id": route.replica.replica_id})
                    first = await response.stream.receive_some()
            except trio.TooSlowError:
                stack.close()
                raise GatewayError(504, f"the model {model!r} did not answer within "
                                   f"{first_byte_timeout:g} s", "upstream_timeout") from None
            except TunnelError as exc:
                stack.close()
                last = GatewayError(502, f"the replica failed before answering ({type(exc).__name__})",
                                    "upstream_error")
                continue
            except BaseException:
                stack.close()
                raise
            if response.status in (502, 503) and attempt == 0 and len(routes) > 1:
                response.close()
                stack.close()
                last = GatewayError(response.status, "the replica could not take the request", "upstream_error")
                continue
            if pin is not None:
                pin.replica_id, pin.node_id = route.replica.replica_id, route.node_id
            return Call(self, who, model, via, route, response, first, began, stack.close)
        raise last or GatewayError(503, f"no replica of {model!r} is available", "no_ready_replica",
                                   retry_after=1)

    def _choose(self, routes: list[Route], pin: Pin | None, exclude: frozenset[str]) -> Route | None:
        if pin is not None and pin.replica_id is not None and pin.replica_id not in exclude:
            for route in routes:
                if route.replica.replica_id == pin.replica_id:
                    return route
        return self.router.pick(routes, exclude)
