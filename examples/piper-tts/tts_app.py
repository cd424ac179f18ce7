"""The piper-tts worker's HTTP face: OpenAI's POST /v1/audio/speech on quart-trio, streamed by sentence."""

from __future__ import annotations

import json
import math
import time
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import trio
from quart import Response, request
from quart.wrappers.response import ResponseBody
from quart_trio import QuartTrio
from tts_audio import CONTENT_TYPES, FORMATS, encoder_for
from tts_engine import TtsEngine
from werkzeug.exceptions import HTTPException

MAX_BODY_BYTES = 64 * 1024
MAX_INPUT_CHARS = 4096  # OpenAI's limit
# OpenAI's voice names: a client written for OpenAI names one of them; each is this voice.
OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage",
                           "shimmer", "verse", "marin", "cedar"})


class ApiError(Exception):
    """A request the worker refuses, with an HTTP status and an OpenAI error body."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict[str, Any]:
        """OpenAI's error shape."""
        return {"error": {"message": self.message, "type": "invalid_request_error",
                          "param": self.param, "code": self.code}}


def _invalid(param: str, message: str) -> ApiError:
    return ApiError(400, message, code="invalid_value", param=param)


class SpeechStream(ResponseBody):
    """The audio body, synthesized while quart sends it; leaving it early stops the synthesis."""

    def __init__(self, engine: TtsEngine, text: str, speed: float, response_format: str) -> None:
        self.engine, self.text, self.speed = engine, text, speed
        self.encoder = encoder_for(response_format, engine.sample_rate)
        self._stack = AsyncExitStack()
        self._pieces: trio.MemoryReceiveChannel[bytes] | None = None

    async def __aenter__(self) -> SpeechStream:
        self._pieces = await self._stack.enter_async_context(
            self.engine.open_speech(self.text, self.speed, self.encoder))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> SpeechStream:
        return self

    async def __anext__(self) -> bytes:
        assert self._pieces is not None
        while True:
            try:
                piece = await self._pieces.receive()
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
            if piece:
                return piece


def parse_speech(body: Any, voices: frozenset[str]) -> tuple[str, str, float, str]:
    """(model, input, speed, response_format) of a speech request; ApiError names a bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required", code="missing_model", param="model")
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise _invalid("input", "'input' must be a non-empty string: the text to speak")
    if len(text) > MAX_INPUT_CHARS:
        raise _invalid("input", f"'input' is {len(text)} characters; the limit is {MAX_INPUT_CHARS}")
    voice = body.get("voice")
    if voice is not None and (not isinstance(voice, str) or voice not in voices | OPENAI_VOICES):
        raise _invalid("voice", f"'voice' must be one of {', '.join(sorted(voices))} (or an OpenAI "
                       f"voice name, spoken by the same voice), not {voice!r}")
    response_format = body.get("response_format") or "mp3"
    if not isinstance(response_format, str) or response_format not in FORMATS:
        raise _invalid("response_format", f"'response_format' must be one of {', '.join(FORMATS)}, "
                       f"not {response_format!r}")
    speed = body.get("speed", 1.0)
    if speed is None:
        speed = 1.0
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not math.isfinite(speed) \
            or not 0.25 <= speed <= 4.0:
        raise _invalid("speed", f"'speed' must be a number from 0.25 to 4.0, not {speed!r}")
    if body.get("stream_format") not in (None, "audio"):
        raise _invalid("stream_format", "only stream_format 'audio' is supported")
    return model, text, float(speed), response_format


def _closing(status: int) -> dict[str, str]:
    # A 413 leaves the rest of the upload unread, so the connection cannot carry another request.
    return {"Connection": "close"} if status == 413 else {}


def create_app(engine: TtsEngine, models: tuple[str, ...], voices: frozenset[str]) -> QuartTrio:
    """The ASGI app serving `models` (one voice each) from `engine`."""
    app = QuartTrio(__name__)
    # A long text streams for a while; a client that goes away cancels it instead.
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, RESPONSE_TIMEOUT=None)
    started = int(time.time())

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> tuple[dict[str, Any], int, dict[str, str]]:
        return exc.body(), exc.status, _closing(exc.status)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[dict[str, Any], int, dict[str, str]]:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        message = {404: f"no such endpoint: {request.path}",
                   405: f"method {request.method} is not allowed on {request.path}",
                   413: f"request body is larger than {MAX_BODY_BYTES} bytes"}
        status = exc.code or 400
        return ApiError(status, message.get(status, exc.description or exc.name),
                        code=code.get(status)).body(), status, _closing(status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(models), "voices": sorted(voices),
                "max_concurrency": engine.max_concurrency, "active_requests": engine.active_requests,
                "queued_requests": engine.queued_requests, "sample_rate": engine.sample_rate,
                "audio_seconds": round(engine.audio_seconds, 3)}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": m, "object": "model", "created": started, "owned_by": "flowctl"} for m in models]}

    @app.post("/v1/audio/speech")
    async def speech() -> Response:
        raw = await request.get_data(cache=False)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"request body is not valid JSON ({exc})", code="invalid_json") from None
        model, text, speed, response_format = parse_speech(body, voices)
        if model not in models:
            raise ApiError(404, f"the model {model!r} does not exist (this worker serves "
                           f"{', '.join(models)})", code="model_not_found", param="model")
        stream = SpeechStream(engine, text, speed, response_format)
        headers = {"X-Audio-Sample-Rate": str(engine.sample_rate),
                   "X-Audio-Bytes-Per-Second": f"{stream.encoder.bytes_per_second:g}",
                   "X-Audio-Header-Bytes": str(stream.encoder.header_bytes),
                   "Cache-Control": "no-cache"}
        return Response(stream, status=200, content_type=CONTENT_TYPES[response_format], headers=headers)

    return app
