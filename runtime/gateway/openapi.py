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


def _schema(required: list[str], **props: dict) -> dict:
    return {"type": "object", "required": required, "properties": {**_COMMON, **props}}


@cache
def document() -> bytes:
    """The OpenAPI 3.0 document as JSON bytes."""
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
            "/v1/audio/speech": _post("Text to speech (needs a tts model)", _schema(
                ["model", "input"], input={"type": "string"})),
            "/v1/images/generations": _post("Image generation (needs an image model)", _schema(
                ["model", "prompt"], prompt={"type": "string"})),
            "/v1/audio/transcriptions": _post("Speech to text (needs an asr model; multipart too)", _schema(
                ["model"], file={"type": "string"})),
            "/v1/openapi.json": {"get": {"summary": "This description", "responses": {
                "200": {"description": "OpenAPI 3.0 JSON"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (every tenant's traffic: admin key or metrics token)",
                                 "security": [{"adminKey": []}, {"metricsToken": []}],
                                 "responses": {"200": {"description": "Prometheus text format 0.0.4"},
                                               "401": _ERROR, "405": _ERROR}}},
            **openapi_admin.PATHS,
        },
    }
    return json.dumps(doc).encode()
