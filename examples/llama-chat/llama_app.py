"""The llama-chat worker's HTTP face: OpenAI routes on quart-trio over an `Engine`."""

from __future__ import annotations

import json
import time
from collections import deque
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import trio
from gemma_turns import BadMessages, chat_segments
from llama_api import (
    ApiError,
    CompletionRequest,
    Reply,
    embeddings_body,
    invalid,
    parse_chat,
    parse_completion,
    parse_embeddings,
)
from llama_engine import ContextTooLong, Engine, Finished
from quart import Response, request
from quart.wrappers.response import ResponseBody
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

MAX_BODY_BYTES = 1024 * 1024
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


class CompletionStream(ResponseBody):
    """An SSE body that generates while quart sends it.

    Lifetime: generation starts (after waiting for the model) when quart enters the body,
    after the status line went out, and stops when quart leaves it: at the end, on an
    error, or when the client disconnects (quart-trio then cancels the sender).
    """

    def __init__(self, engine: Engine, tokens: list[int], reply: Reply):
        self.engine = engine
        self.tokens = tokens
        self.reply = reply
        self._stack = AsyncExitStack()
        self._items: trio.MemoryReceiveChannel[str | Finished] | None = None
        self._queue: deque[bytes] = deque()
        first = reply.first()
        if first is not None:
            self._queue.append(_sse(first))
        self._ended = False

    async def __aenter__(self) -> CompletionStream:
        self._items = await self._stack.enter_async_context(
            self.engine.open_stream(self.tokens, self.reply.request.sampling))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> CompletionStream:
        return self

    async def __anext__(self) -> bytes:
        if self._queue:
            return self._queue.popleft()
        if self._ended or self._items is None:
            raise StopAsyncIteration
        try:
            item = await self._items.receive()
        except trio.EndOfChannel:
            self._ended = True
            raise StopAsyncIteration from None
        # When the writer fell behind, send every waiting piece in one write.
        out = []
        while True:
            if isinstance(item, Finished):
                self._ended = True
                out.extend(_sse(chunk) for chunk in self.reply.last(item))
                out.append(DONE)
                return b"".join(out)
            out.append(_sse(self.reply.piece(item)))
            try:
                item = self._items.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return b"".join(out)


def create_app(engine: Engine, models: tuple[str, ...], *, device: str) -> QuartTrio:
    """The ASGI app serving `models` from `engine`."""
    app = QuartTrio(__name__)
    # Generations may stream for minutes; a client that goes away cancels them instead.
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, RESPONSE_TIMEOUT=None)
    started = int(time.time())
    backend = engine.backend

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> tuple[dict[str, Any], int]:
        return exc.body(), exc.status

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[dict[str, Any], int]:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        message = {404: f"no such endpoint: {request.path}",
                   405: f"method {request.method} is not allowed on {request.path}",
                   413: f"request body is larger than {MAX_BODY_BYTES} bytes"}
        status = exc.code or 400
        return ApiError(status, message.get(status, exc.description or exc.name),
                        code=code.get(status)).body(), status

    @app.errorhandler(ContextTooLong)
    async def too_long(exc: ContextTooLong) -> tuple[dict[str, Any], int]:
        return ApiError(400, str(exc), code="context_length_exceeded", param="messages").body(), 400

    async def read_json() -> dict[str, Any]:
        raw = await request.get_data(cache=False)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"request body is not valid JSON ({exc})",
                           code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"request body must be a JSON object, not "
                           f"{type(body).__name__}", code="invalid_json")
        return body

    def check_model(model: str) -> None:
        if model not in models:
            raise ApiError(404, f"the model {model!r} does not exist (this worker serves "
                           f"{', '.join(models)})", code="model_not_found", param="model")

    def chat_tokens(req: CompletionRequest) -> list[int]:
        try:
            segments = chat_segments(req.messages)
        except BadMessages as exc:
            raise invalid("messages", str(exc)) from None
        tokens = [*backend.tokenize("", bos=True)] if backend.adds_bos else []
        for text, special in segments:
            tokens += backend.tokenize(text, special=special)
        return tokens

    def text_tokens(req: CompletionRequest) -> list[int]:
        # Like llama.cpp's server: a raw prompt may spell Gemma's turn markers itself.
        return backend.tokenize(req.prompt, bos=backend.adds_bos, special=True)

    async def complete(req: CompletionRequest, *, chat: bool) -> Response | dict[str, Any]:
        check_model(req.model)
        tokens = await trio.to_thread.run_sync(chat_tokens if chat else text_tokens, req)
        engine.check_room(len(tokens))
        reply = Reply(req, chat=chat)
        if req.stream:
            return Response(CompletionStream(engine, tokens, reply), status=200,
                            mimetype="text/event-stream", headers=SSE_HEADERS)
        pieces: list[str] = []
        async with engine.open_stream(tokens, req.sampling) as items:
            async for item in items:
                if isinstance(item, Finished):
                    if item.finish_reason == "error":
                        raise ApiError(500, "the model failed to evaluate this request's batch",
                                       code="model_error", kind="server_error")
                    return reply.whole("".join(pieces), item)
                pieces.append(item)
        raise AssertionError("generation ended without a Finished item")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        cache = engine.batcher.cache
        return {"status": "ok", "models": list(models), "max_concurrency": engine.max_concurrency,
                "active_requests": engine.active_requests,
                "queued_requests": engine.queued_requests,
                "active_sequences": engine.active_requests,
                "queued_sequences": len(engine.batcher.pending),
                "n_ctx_per_sequence": backend.n_ctx, "kv_cache_tokens": backend.kv_tokens,
                "cached_sequences": cache.cached_sequences,
                "cached_tokens": cache.cached_tokens, "cache_evictions": cache.evictions,
                "tokens_generated": engine.tokens_generated, "device": device}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": m, "object": "model", "created": started, "owned_by": "flowctl"}
            for m in models]}

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response | dict[str, Any]:
        return await complete(parse_chat(await read_json()), chat=True)

    @app.post("/v1/completions")
    async def completions() -> Response | dict[str, Any]:
        return await complete(parse_completion(await read_json()), chat=False)

    @app.post("/v1/embeddings")
    async def embeddings() -> dict[str, Any]:
        model, texts, encoding = parse_embeddings(await read_json())
        check_model(model)
        vectors, count = await engine.embed(texts)
        return embeddings_body(model, vectors, count, encoding)

    return app
