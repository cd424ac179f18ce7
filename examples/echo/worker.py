"""The echo worker: a bare ASGI app on hypercorn's Trio worker (starts in ~0.4 s).

Environment:
  FLOWCTL_PORT          port to listen on (0: any free port; default 8000)
  FLOWCTL_HOST          address to bind (default 127.0.0.1)
  ECHO_MAX_CONCURRENCY  requests generated at once, advertised on /health (default 16)
  ECHO_TOKEN_DELAY_S    pause before each streamed token (default 0; `echo_delay_s` per request)

Once listening it prints `echo worker listening on http://HOST:PORT` on stdout.
SIGTERM or SIGINT: stop accepting, let running requests finish for up to
GRACEFUL_TIMEOUT_S, exit 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio
from echo_api import (
    Generation,
    RequestError,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    embeddings_response,
    new_id,
    parse_chat,
    parse_completion,
    plan,
    usage,
)
from hypercorn.config import Config
from hypercorn.trio import serve

MAX_BODY_BYTES = 1024 * 1024
GRACEFUL_TIMEOUT_S = 2.0
DEFAULT_PORT = 8000
DEFAULT_MAX_CONCURRENCY = 16
HERE = Path(__file__).resolve().parent

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def model_ids(manifest: Path) -> tuple[str, ...]:
    """The model ids this worker answers for: those of its service.json, else "echo"."""
    try:
        models = json.loads(manifest.read_text()).get("models", [])
        ids = tuple(m["model_id"] for m in models if isinstance(m.get("model_id"), str))
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        ids = ()
    return ids or ("echo",)


async def _read_json(receive: Any) -> dict[str, Any]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise trio.BrokenResourceError("client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(413, f"request body is larger than {MAX_BODY_BYTES} bytes",
                               code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"request body is not valid JSON ({exc})",
                           code="invalid_json") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"request body must be a JSON object, not {type(body).__name__}",
                           code="invalid_json")
    return body


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON, (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


class EchoApp:
    """The ASGI application; one instance per process."""

    def __init__(self, *, models: tuple[str, ...], max_concurrency: int, delay_s: float):
        self.models = models
        self.max_concurrency = max_concurrency
        self.delay_s = delay_s
        self.started = int(time.time())
        self.limiter = trio.CapacityLimiter(max_concurrency)
        self.routes = {
            ("GET", "/health"): self.health,
            ("GET", "/v1/models"): self.list_models,
            ("POST", "/v1/chat/completions"): self.chat,
            ("POST", "/v1/completions"): self.completions,
            ("POST", "/v1/embeddings"): self.embeddings,
        }

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        path = scope["path"].rstrip("/") or "/"
        handler = self.routes.get((method, path))
        try:
            if handler is None:
                if any(p == path for _, p in self.routes):
                    raise RequestError(405, f"method {scope['method']} is not allowed on {path}",
                                       code="method_not_allowed")
                raise RequestError(404, f"no such endpoint: {path}", code="not_found")
            await handler(receive, send)
        except RequestError as exc:
            await _send_json(send, exc.status, exc.body())
        except trio.BrokenResourceError:
            pass  # the client left before the answer; nothing to send it

    async def health(self, receive: Any, send: Any) -> None:
        """GET /health: readiness and load, read by the node and the scheduler."""
        stats = self.limiter.statistics()
        await _send_json(send, 200, {
            "status": "ok", "models": list(self.models), "max_concurrency": self.max_concurrency,
            "active_requests": stats.borrowed_tokens, "queued_requests": stats.tasks_waiting,
        })

    async def list_models(self, receive: Any, send: Any) -> None:
        """GET /v1/models."""
        await _send_json(send, 200, {"object": "list", "data": [
            {"id": m, "object": "model", "created": self.started, "owned_by": "flowctl"}
            for m in self.models]})

    def _check_model(self, model: str) -> None:
        if model not in self.models:
            raise RequestError(404, f"the model {model!r} does not exist (this worker serves "
                               f"{', '.join(self.models)})", code="model_not_found",
                               param="model")

    async def embeddings(self, receive: Any, send: Any) -> None:
        """POST /v1/embeddings."""
        body = await _read_json(receive)
        answer = embeddings_response(body)
        self._check_model(answer["model"])
        await _send_json(send, 200, answer)

    async def chat(self, receive: Any, send: Any) -> None:
        """POST /v1/chat/completions."""
        await self._generate(parse_chat(await _read_json(receive)), "chatcmpl", send, receive)

    async def completions(self, receive: Any, send: Any) -> None:
        """POST /v1/completions."""
        await self._generate(parse_completion(await _read_json(receive)), "cmpl", send, receive)

    async def _generate(self, gen: Generation, prefix: str, send: Any, receive: Any) -> None:
        self._check_model(gen.model)
        delay = self.delay_s if gen.delay_s is None else gen.delay_s
        answers = [plan(p, gen) for p in gen.prompts]
        async with self.limiter, trio.open_nursery() as nursery:
            # Stop as soon as the client disconnects, like a real model would.
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            if gen.stream:
                await _stream(gen, prefix, answers[0], delay, send)
            else:
                if delay:
                    await trio.sleep(delay * max(len(toks) for toks, _ in answers))
                rid = new_id(prefix)
                body = (chat_response(gen, rid, *answers[0]) if prefix == "chatcmpl"
                        else completion_response(gen, rid, answers))
                await _send_json(send, 200, body)
            nursery.cancel_scope.cancel()


async def _stream(gen: Generation, prefix: str, answer: tuple[list[str], str], delay: float,
                  send: Any) -> None:
    tokens, finish = answer
    rid, created = new_id(prefix), int(time.time())
    chat = prefix == "chatcmpl"
    chunk = chat_chunk if chat else completion_chunk
    await send({"type": "http.response.start", "status": 200, "headers": _SSE})

    async def emit(obj: dict[str, Any]) -> None:
        await send({"type": "http.response.body", "body": _sse(obj), "more_body": True})

    if chat:
        await emit(chat_chunk(gen, rid, created, delta={"role": "assistant", "content": ""}))
    for token in tokens:
        if delay:
            await trio.sleep(delay)
        await emit(chat_chunk(gen, rid, created, delta={"content": token}) if chat
                   else completion_chunk(gen, rid, created, text=token))
    await emit(chunk(gen, rid, created, finish=finish))
    if gen.include_usage:
        await emit(chunk(gen, rid, created, final_usage=usage(gen.prompt_tokens, len(tokens))))
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _cancel_on_disconnect(receive: Any, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _wait_for_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


async def serve_echo(host: str, port: int, app: EchoApp) -> None:
    """Serve `app` on host:port until SIGTERM or SIGINT."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config,
                                            shutdown_trigger=_wait_for_signal))
        print(f"echo worker listening on {binds[0]}", flush=True)


def main() -> int:
    """Read the environment and run the worker; exit status 2 on a bad setting."""
    try:
        port = int(os.environ.get("FLOWCTL_PORT", DEFAULT_PORT))
        limit = int(os.environ.get("ECHO_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY))
        delay = float(os.environ.get("ECHO_TOKEN_DELAY_S", "0"))
        if not (0 <= port <= 65535 and limit >= 1 and delay >= 0):
            raise ValueError("out of range")
    except ValueError as exc:
        print(f"echo worker: bad environment setting: {exc}", file=sys.stderr)
        return 2
    app = EchoApp(models=model_ids(HERE / "service.json"), max_concurrency=limit, delay_s=delay)
    host = os.environ.get("FLOWCTL_HOST", "127.0.0.1")
    failure: OSError | None = None
    try:
        trio.run(serve_echo, host, port, app)
    except* OSError as group:
        failure = _first_leaf(group)
    if failure is not None:
        print(f"echo worker: cannot listen on {host}:{port}: {failure.strerror or failure}",
              file=sys.stderr)
        return 1
    return 0


def _first_leaf(group: BaseExceptionGroup) -> OSError:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, OSError)
    return leaf


if __name__ == "__main__":
    sys.exit(main())
