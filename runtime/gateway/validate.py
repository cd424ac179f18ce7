"""Just enough validation of an OpenAI request body to route it and to refuse bad input with a 4xx."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from runtime.gateway.audio import AUDIO_UPLOADS, multipart_model
from runtime.gateway.errors import GatewayError
from runtime.http.jsonbody import InvalidJson, decode_json

# A model id travels in logs, metrics and headers: no control characters, spaces or CR/LF.
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}")
MAX_N = 128
MAX_TOKENS = 1_000_000

# endpoint path -> model type deployed for it (None: any model serves it).
ENDPOINTS: dict[str, str] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embedding",
    "/v1/audio/transcriptions": "asr",
    "/v1/audio/translations": "asr",
    "/v1/audio/speech": "tts",
    "/v1/images/generations": "image",
}


@dataclass(frozen=True)
class Parsed:
    """What routing and accounting need from a request body."""

    model: str
    stream: bool
    include_usage: bool


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, code, param=param)


def parse_body(path: str, raw: bytes, content_type: str = "application/json") -> Parsed:
    """Parse and check the fields the gateway reads; everything else is the worker's business."""
    if path in AUDIO_UPLOADS:
        field = multipart_model(raw, content_type)
        _check_model(field)
        return Parsed(field, False, False)
    try:
        body = decode_json(raw)
    except InvalidJson as exc:
        raise _bad(str(exc), code="invalid_json") from None
    if not isinstance(body, dict):
        raise _bad(f"the request body must be a JSON object, not {type(body).__name__}", code="invalid_json")
    model = body.get("model")
    if model is None:
        raise _bad("'model' is required", "model", "missing_model")
    _check_model(model)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "stream")
    for name, high in (("n", MAX_N), ("max_tokens", MAX_TOKENS), ("max_completion_tokens", MAX_TOKENS)):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(f"'{name}' must be an integer", name)
        if not 1 <= value <= high:
            raise _bad(f"'{name}' must be between 1 and {high}, not {value}", name)
    if path == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise _bad("'messages' must be a non-empty list of objects", "messages")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("'stream_options' must be an object", "stream_options")
    include_usage = bool(options and options.get("include_usage") is True)
    return Parsed(model, bool(stream), include_usage)


def _check_model(model: Any) -> None:
    if not isinstance(model, str):
        raise _bad("'model' must be a string", "model")
    if not MODEL_ID.fullmatch(model):
        raise _bad("'model' is not a valid model id (letters, digits and ._:/@+- only)", "model",
                   "invalid_model")

