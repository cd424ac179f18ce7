"""The gateway's OpenAPI description (served at /v1/openapi.json; the fuzz tests read it).

The /v1 API (API keys) is described here, the admin API (/api/gateway/*) in openapi_admin.
"""

from __future__ import annotations

import json
from functools import cache

from runtime.gateway import openapi_admin

_ERROR = {"description": "OpenAI-style error", "content": {"application/json": {"schema": {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"}, "code": {"type": "string", "nullable": True},
        "param": {"type": "string", "nullable": True}}}}}}}}
_ERRORS = {str(s): _ERROR for s in (400, 401, 403, 404, 405, 408, 413, 429, 502, 503, 504)}
_ERRORS["429"] = {**_ERROR, "description": "a limit of the key or its tenant (rate_limit_exceeded, "
                  "tokens_limit_exceeded, concurrency_limit_exceeded), with Retry-After"}
_ERRORS["503"] = {**_ERROR, "description": "no ready replica (no_ready_replica), or limits that cannot be checked "
                  "because the planes' Redis does not answer (limiter_unavailable), with Retry-After"}
_MESSAGE = {"type": "object", "required": ["role", "content"],
            "properties": {"role": {"type": "string"}, "content": {"type": "string"}}}
_COMMON = {"model": {"type": "string"}, "stream": {"type": "boolean"}, "n": {"type": "integer", "minimum": 1},
           "max_tokens": {"type": "integer", "minimum": 1},
           "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}}}


def _post(summary: str, schema: dict) -> dict:
    return {"post": {"summary": summary, "security": [{"bearer": []}],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
                     "responses": {"200": {"description": "the worker's answer (JSON, or SSE when streaming)"},
                                   **_ERRORS}}}


def _upload(summary: str) -> dict:
    """An OpenAI audio upload: a multipart form with the audio file."""
    form = {"type": "object", "required": ["file", "model"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "WAV, FLAC, OGG, MP3, M4A or WebM"},
        "model": {"type": "string"}, "language": {"type": "string", "description": "ISO-639-1, e.g. en"},
        "prompt": {"type": "string"}, "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "response_format": {"type": "string", "enum": ["json", "text", "verbose_json", "srt", "vtt"]}}}
    return {"post": {"summary": summary, "security": [{"bearer": []}],
                     "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}},
                     "responses": {"200": {"description": "the text: JSON ({\"text\"}, verbose_json with segments) "
                                                          "or plain text, SRT, WebVTT"}, **_ERRORS}}}


def _speech() -> dict:
    """OpenAI's text to speech: JSON in, audio out (streamed sentence by sentence)."""
    body = {"type": "object", "required": ["model", "input"], "properties": {
        "model": {"type": "string"}, "input": {"type": "string", "maxLength": 4096},
        "voice": {"type": "string"}, "speed": {"type": "number", "minimum": 0.25, "maximum": 4.0},
        "response_format": {"type": "string", "enum": ["mp3", "opus", "wav", "pcm"]}}}
    audio = {t: {"schema": {"type": "string", "format": "binary"}}
             for t in ("audio/mpeg", "audio/ogg", "audio/wav", "audio/pcm")}
    return {"post": {"summary": "Text to speech (needs a tts model); the audio streams as it is made",
                     "security": [{"bearer": []}],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
                     "responses": {"200": {"description": "the audio", "content": audio}, **_ERRORS}}}


def _schema(required: list[str], **props: dict) -> dict:
    return {"type": "object", "required": required, "properties": {**_COMMON, **props}}


@cache
def document() -> bytes:
    """The OpenAPI 3.0 document as JSON bytes."""
    # Imported here, not at the top: runtime.jobs imports the gateway's errors.
    from runtime.jobs import batch_openapi

    doc = {
        "openapi": "3.0.3",
        "info": {"title": "flowctl gateway", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "an API key (fgk_...)"},
                                           "adminKey": {"type": "http", "scheme": "bearer",
                                                        "description": "the control plane's admin key"},
                                           "metricsToken": {"type": "http", "scheme": "bearer",
                                                            "description": "FLOWCTL_METRICS_TOKEN: reads "
                                                                           "/metrics and nothing else"}},
                       "schemas": openapi_admin.SCHEMAS},
        "paths": {
            "/v1/models": {"get": {"summary": "The ready models this key may use (OpenAI list format)",
                                   "security": [{"bearer": []}],
                                   "responses": {"200": {"description": "model list"}, **_ERRORS}}},
            "/v1/chat/completions": _post("Chat completion (SSE with stream: true)", _schema(
                ["model", "messages"], messages={"type": "array", "minItems": 1, "items": _MESSAGE})),
            "/v1/completions": _post("Text completion (SSE with stream: true)", _schema(
                ["model", "prompt"], prompt={"type": "string"})),
            "/v1/embeddings": _post("Embeddings", _schema(["model", "input"], input={"type": "string"})),
            "/v1/audio/speech": _speech(),
            "/v1/images/generations": _post("Image generation (needs an image model)", _schema(
                ["model", "prompt"], prompt={"type": "string"})),
            "/v1/audio/transcriptions": _upload("Speech to text (needs an asr model)"),
            "/v1/audio/translations": _upload("Speech in any language to English text (needs an asr model)"),
            "/v1/openapi.json": {"get": {"summary": "This description", "responses": {
                "200": {"description": "OpenAPI 3.0 JSON"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (every tenant's traffic: admin key or metrics token)",
                                 "security": [{"adminKey": []}, {"metricsToken": []}],
                                 "responses": {"200": {"description": "Prometheus text format 0.0.4"},
                                               "401": _ERROR, "405": _ERROR}}},
            **openapi_admin.PATHS,
            **batch_openapi.PATHS,  # the OpenAI Files and Batches API, served by the jobs role
        },
    }
    return json.dumps(doc).encode()
