"""The whisper-asr worker's HTTP face: OpenAI's audio routes on quart-trio over an `AsrEngine`."""

from __future__ import annotations

import time
from typing import Any

import trio
from asr_api import ApiError, invalid, parse_options, render
from asr_engine import AsrEngine
from audio_input import BadAudio, decode
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

MULTIPART_OVERHEAD = 64 * 1024  # the form's other fields and boundaries around the file


def _closing(status: int) -> dict[str, str]:
    # A 413 leaves the rest of the upload unread, so the connection cannot carry another request.
    return {"Connection": "close"} if status == 413 else {}


def create_app(engine: AsrEngine, models: tuple[str, ...], *, device: str, max_upload: int,
               max_seconds: float, languages: frozenset[str]) -> QuartTrio:
    """The ASGI app serving `models` from `engine`."""
    app = QuartTrio(__name__)
    # Transcribing a long file takes a while; a client that goes away cancels it instead.
    app.config.update(MAX_CONTENT_LENGTH=max_upload + MULTIPART_OVERHEAD, RESPONSE_TIMEOUT=None,
                      MAX_FORM_MEMORY_SIZE=max_upload + MULTIPART_OVERHEAD)
    started = int(time.time())

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> tuple[dict[str, Any], int, dict[str, str]]:
        return exc.body(), exc.status, _closing(exc.status)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[dict[str, Any], int, dict[str, str]]:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        message = {404: f"no such endpoint: {request.path}",
                   405: f"method {request.method} is not allowed on {request.path}",
                   413: f"the upload is larger than {max_upload} bytes, this worker's limit"}
        status = exc.code or 400
        return ApiError(status, message.get(status, exc.description or exc.name),
                        code=code.get(status)).body(), status, _closing(status)

    async def audio_request(task: str) -> Response:
        if not request.mimetype.startswith("multipart/form-data"):
            raise ApiError(400, "send the audio as multipart/form-data with a 'file' field",
                           code="invalid_content_type")
        form = {k: ",".join(v) for k, v in (await request.form).lists()}
        files = await request.files
        model = form.get("model")
        if not model:
            raise ApiError(400, "'model' is required", code="missing_model", param="model")
        if model not in models:
            raise ApiError(404, f"the model {model!r} does not exist (this worker serves "
                           f"{', '.join(models)})", code="model_not_found", param="model")
        upload = files.get("file")
        if upload is None:
            raise invalid("file", "'file' is required: the audio, as a file field of the form")
        options, response_format = parse_options(form, task=task, languages=languages)
        data = upload.read()
        if len(data) > max_upload:
            raise ApiError(413, f"the upload is larger than {max_upload} bytes, this worker's limit",
                           code="request_too_large", param="file")
        try:
            audio = await trio.to_thread.run_sync(lambda: decode(data, max_seconds=max_seconds))
        except BadAudio as exc:
            raise ApiError(400, str(exc), code=exc.code, param="file") from None
        transcript = await engine.transcribe(audio, options)
        body, content_type = render(transcript, response_format)
        return Response(body, status=200, content_type=content_type,
                        headers={"X-Audio-Seconds": f"{transcript.duration:.3f}"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(models), "max_concurrency": engine.max_concurrency,
                "active_requests": engine.active_requests, "queued_requests": engine.queued_requests,
                "audio_seconds": round(engine.audio_seconds, 3), "cancelled": engine.cancelled,
                "device": device}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": m, "object": "model", "created": started, "owned_by": "flowctl"} for m in models]}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions() -> Response:
        return await audio_request("transcribe")

    @app.post("/v1/audio/translations")
    async def translations() -> Response:
        return await audio_request("translate")

    return app
