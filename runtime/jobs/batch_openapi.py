"""The OpenAPI description of the OpenAI Files and Batches API (runtime/jobs/batch_api.py).

Merged into the gateway's description (runtime/gateway/openapi.py), which serves it at
/v1/openapi.json and, through the plane's document, at /openapi.json.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"description": "OpenAI-style error", "content": {"application/json": {"schema": {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"}, "code": {"type": "string", "nullable": True},
        "param": {"type": "string", "nullable": True}}}}}}}}
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
_FILE = {"type": "object", "properties": {
    "id": {"type": "string"}, "object": {"type": "string", "enum": ["file"]}, "bytes": {"type": "integer"},
    "created_at": {"type": "integer"}, "filename": {"type": "string"},
    "purpose": {"type": "string", "enum": ["batch", "batch_output"]}, "status": {"type": "string"}}}
_COUNTS = {"type": "object", "properties": {k: {"type": "integer"} for k in ("total", "completed", "failed")}}
_BATCH = {"type": "object", "properties": {
    "id": {"type": "string"}, "object": {"type": "string", "enum": ["batch"]}, "endpoint": {"type": "string"},
    "input_file_id": {"type": "string"}, "completion_window": {"type": "string"},
    "status": {"type": "string", "enum": ["validating", "in_progress", "finalizing", "completed", "failed",
                                          "cancelling", "cancelled", "expired"]},
    "output_file_id": {"type": "string", "nullable": True}, "error_file_id": {"type": "string", "nullable": True},
    "errors": {"type": "object", "nullable": True}, "request_counts": _COUNTS,
    "metadata": {"type": "object", "nullable": True, "additionalProperties": {"type": "string"}},
    **{f"{t}_at": {"type": "integer", "nullable": True} for t in (
        "created", "in_progress", "expires", "finalizing", "completed", "failed", "expired", "cancelling",
        "cancelled")}}}
_ID = {"in": "path", "required": True, "schema": {"type": "string"}}
_PAGE = [{"name": "after", "in": "query", "required": False, "schema": {"type": "string"},
          "description": "the last id of the previous page"},
         {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1,
                                                                         "maximum": 100}}]


def _op(summary: str, ok: dict[str, Any], *errors: int, **extra: Any) -> dict[str, Any]:
    responses = {"200": ok, **{str(s): _ERROR for s in (401, 503, *errors)}}
    return {"summary": summary, "security": _SECURITY, "tags": ["batches"], "responses": responses, **extra}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"object": {"type": "string"}, "data": {"type": "array", "items": item},
                                             "has_more": {"type": "boolean"}}}


PATHS: dict[str, Any] = {
    "/v1/files": {
        "post": _op("Upload a batch input file (JSONL: custom_id, method POST, url, body per line)",
                    _json(_FILE, "the stored file"), 400, 408, 413, requestBody={
                        "required": True, "content": {"multipart/form-data": {"schema": {
                            "type": "object", "required": ["file", "purpose"], "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "purpose": {"type": "string", "enum": ["batch"]}}}}}}),
        "get": _op("The tenant's files, newest first", _json(_list(_FILE), "a list of files"), 400,
                   parameters=[{"name": "purpose", "in": "query", "required": False, "schema": {"type": "string"}},
                               *_PAGE]),
    },
    "/v1/files/{file_id}": {
        "get": _op("One file", _json(_FILE, "the file"), 404, parameters=[{"name": "file_id", **_ID}]),
        "delete": _op("Delete a file", _json({"type": "object", "properties": {
            "id": {"type": "string"}, "deleted": {"type": "boolean"}}}, "deleted"), 404,
            parameters=[{"name": "file_id", **_ID}]),
    },
    "/v1/files/{file_id}/content": {
        "get": _op("A file's bytes (a batch's output or error file: one JSON result per line)",
                   {"description": "the file", "content": {"application/octet-stream": {
                       "schema": {"type": "string", "format": "binary"}}}}, 404,
                   parameters=[{"name": "file_id", **_ID}]),
    },
    "/v1/batches": {
        "post": _op("Start a batch over an uploaded file (a run of a one-step inference job)",
                    _json(_BATCH, "the batch"), 400, 404, 413, requestBody={"required": True, "content": {
                        "application/json": {"schema": {
                            "type": "object", "required": ["input_file_id", "endpoint", "completion_window"],
                            "properties": {"input_file_id": {"type": "string"},
                                           "endpoint": {"type": "string", "enum": [
                                               "/v1/chat/completions", "/v1/completions", "/v1/embeddings"]},
                                           "completion_window": {"type": "string", "enum": ["24h"]},
                                           "metadata": {"type": "object",
                                                        "additionalProperties": {"type": "string"}}}}}}}),
        "get": _op("The tenant's batches, newest first", _json(_list(_BATCH), "a page of batches"), 400,
                   parameters=_PAGE),
    },
    "/v1/batches/{batch_id}": {
        "get": _op("One batch: status, request counts, output and error files", _json(_BATCH, "the batch"), 404,
                   parameters=[{"name": "batch_id", **_ID}]),
    },
    "/v1/batches/{batch_id}/cancel": {
        "post": _op("Cancel a batch (cancelling, then cancelled; 409 once it has ended)",
                    _json(_BATCH, "the batch"), 404, 409, parameters=[{"name": "batch_id", **_ID}]),
    },
}
