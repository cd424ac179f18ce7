"""The OpenAI Files and Batches API on the gateway (bare ASGI, OpenAI's error shape).

    POST   /v1/files                  multipart (file, purpose=batch): stored once every line is valid
    GET    /v1/files                  the tenant's files (?purpose= ?after= ?limit=)
    GET    /v1/files/{id}             one file
    GET    /v1/files/{id}/content     its bytes
    DELETE /v1/files/{id}             remove it
    POST   /v1/batches                {input_file_id, endpoint, completion_window: "24h", metadata}
    GET    /v1/batches                the tenant's batches (?after= ?limit=)
    GET    /v1/batches/{id}           one batch
    POST   /v1/batches/{id}/cancel    stop it

Every call needs an API key; files and batches belong to the key's tenant, another tenant's
are 404. An upload is streamed to a temporary file and refused with 413 as soon as it passes
`max_file_bytes`, then checked line by line (400 naming the first bad line) before it is kept.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import trio
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from runtime.dispatch.limits import Principal
from runtime.gateway.body import read_body, refuse_declared_length
from runtime.gateway.errors import GatewayError
from runtime.http.jsonbody import InvalidJson, decode_json
from runtime.jobs.batches import BatchService
from runtime.jobs.openai_files import BatchInputError, FileStore, validate_batch_input

DEFAULT_MAX_FILE_BYTES = 100 << 20
UPLOAD_TIMEOUT_S = 600.0
FORM_OVERHEAD = 64 << 10  # the multipart framing and the purpose field, beyond the file itself
MAX_JSON_BODY = 64 << 10
MAX_PAGE = 10000
PREFIXES = ("/v1/files", "/v1/batches")
# What BatchApi._handle's match serves (tests check the two agree, and the OpenAPI description).
ROUTES = frozenset({("POST", "/v1/files"), ("GET", "/v1/files"), ("GET", "/v1/files/{file_id}"),
                    ("GET", "/v1/files/{file_id}/content"), ("DELETE", "/v1/files/{file_id}"),
                    ("POST", "/v1/batches"), ("GET", "/v1/batches"), ("GET", "/v1/batches/{batch_id}"),
                    ("POST", "/v1/batches/{batch_id}/cancel")})
Authenticate = Callable[[str | None], Awaitable[Principal]]
_JSON = (b"content-type", b"application/json")


def is_batch_path(path: str) -> bool:
    """Whether the Files/Batches API serves `path`."""
    return any(path == p or path.startswith(p + "/") for p in PREFIXES)


class BatchApi:
    """The ASGI app for PREFIXES; `service` None answers 503 (a plane without the jobs role)."""

    def __init__(self, authenticate: Authenticate, files: FileStore | None, service: BatchService | None, *,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, upload_timeout: float = UPLOAD_TIMEOUT_S):
        self.authenticate, self.files, self.service = authenticate, files, service
        self.max_file_bytes, self.upload_timeout = max_file_bytes, upload_timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            status, body, headers = await self._handle(scope, receive)
        except GatewayError as exc:
            status, body, headers = exc.status, exc.body(), exc.headers()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client went away
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: dict[str, Any], receive: Any) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization")
        who = await self.authenticate(auth.decode("latin-1") if auth is not None else None)
        if self.service is None or self.files is None:
            raise GatewayError(503, "the Batch API needs the jobs role in this control plane", "batches_unavailable")
        tenant, method = who.tenant, scope["method"]
        parts = scope["path"].rstrip("/").split("/")[2:]
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        files, service = self.files, self.service
        match (method, parts):
            case ("POST", ["files"]):
                return _ok(await self._upload(tenant, headers, receive))
            case ("GET", ["files"]):
                limit = _limit(query, MAX_PAGE)
                records = await trio.to_thread.run_sync(lambda: files.list(
                    tenant, purpose=query.get("purpose"), after=query.get("after"), limit=limit + 1))
                data = [r.public() for r in records[:limit]]
                return _ok({"object": "list", "data": data, "has_more": len(records) > limit,
                            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})
            case ("GET", ["files", file_id]):
                return _ok((await self._file(tenant, file_id)).public())
            case ("GET", ["files", file_id, "content"]):
                content = await trio.to_thread.run_sync(files.read, tenant, file_id)
                if content is None:
                    raise _no_file(file_id)
                return 200, content, [(b"content-type", b"application/octet-stream")]
            case ("DELETE", ["files", file_id]):
                if not await trio.to_thread.run_sync(files.delete, tenant, file_id):
                    raise _no_file(file_id)
                return _ok({"id": file_id, "object": "file", "deleted": True})
            case ("POST", ["batches"]):
                return _ok(await service.create(tenant, await _json(headers, receive)))
            case ("GET", ["batches"]):
                return _ok(await service.list(tenant, after=query.get("after"), limit=_limit(query, 100)))
            case ("GET", ["batches", batch_id]):
                return _ok(await service.get(tenant, batch_id))
            case ("POST", ["batches", batch_id, "cancel"]):
                return _ok(await service.cancel(tenant, batch_id))
        allowed = _allowed(parts)
        if allowed is not None:
            raise GatewayError(405, f"method {method} is not allowed here (use {allowed})", "method_not_allowed",
                               allow=allowed)
        raise GatewayError(404, f"no such endpoint: {method} {scope['path'][:200]}", "not_found")

    async def _file(self, tenant: str, file_id: str) -> Any:
        assert self.files is not None
        record = await trio.to_thread.run_sync(self.files.get, tenant, file_id)
        if record is None:
            raise _no_file(file_id)
        return record

    async def _upload(self, tenant: str, headers: dict[bytes, bytes], receive: Any) -> dict[str, Any]:
        """Stream the multipart body: the file part to a temporary file, 413 past the limit."""
        assert self.files is not None
        files = self.files
        refuse_declared_length(headers, self.max_file_bytes + FORM_OVERHEAD)
        ctype, options = parse_options_header(headers.get(b"content-type", b"").decode("latin-1"))
        boundary = options.get("boundary", "")
        if ctype != "multipart/form-data" or not boundary:
            raise GatewayError(400, "upload a file as multipart/form-data with the fields file and purpose",
                               "invalid_request")
        tmp = trio.Path(files.temp_path())
        try:
            with trio.fail_after(self.upload_timeout):
                async with await trio.open_file(tmp, "wb") as out:
                    filename, fields = await self._receive_form(receive, boundary.encode("latin-1"), out)
            purpose = fields.get("purpose", b"").decode("utf-8", errors="replace")
            if filename is None:
                raise GatewayError(400, "the form has no file part named 'file'", "invalid_request", param="file")
            if purpose != "batch":
                raise GatewayError(400, f"purpose must be \"batch\" (the only purpose stored here), not {purpose!r}",
                                   "invalid_value", param="purpose")
            try:
                lines = await trio.to_thread.run_sync(validate_batch_input, await tmp.read_bytes())
            except BatchInputError as exc:
                raise GatewayError(400, f"{filename}: {exc}", "invalid_batch_input", param="file") from None
            name = filename[:255]
            record = await trio.to_thread.run_sync(lambda: files.add(tenant, name, purpose, Path(tmp), lines=lines))
            return record.public()
        except trio.TooSlowError:
            raise GatewayError(408, f"the upload did not arrive within {self.upload_timeout:g} s",
                               "request_timeout") from None
        finally:
            await tmp.unlink(missing_ok=True)

    async def _receive_form(self, receive: Any, boundary: bytes, out: Any) -> tuple[str | None, dict[str, bytes]]:
        """Read the form: the part `file` written to `out`, other fields kept (small); 413 past the limit."""
        limit = self.max_file_bytes
        decoder = MultipartDecoder(boundary, max_form_memory_size=FORM_OVERHEAD, max_parts=16)
        fields: dict[str, bytes] = {}
        filename: str | None = None
        current: str | None = None  # the part being read: "file", a field's name, or None (ignored)
        size = received = 0
        more = True
        try:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise trio.BrokenResourceError("the client went away")
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit + FORM_OVERHEAD:
                    raise _too_large(limit)
                more = message.get("more_body", False)
                decoder.receive_data(chunk)
                if not more:
                    decoder.receive_data(None)
                while not isinstance(event := decoder.next_event(), NeedData | Epilogue):
                    if isinstance(event, File):
                        current = "file" if event.name == "file" and filename is None else None
                        if current:
                            filename = event.filename or "upload.jsonl"
                    elif isinstance(event, Field):
                        current = event.name if event.name != "file" else None
                        if current is not None:
                            fields[current] = b""
                    elif isinstance(event, Data) and current == "file":
                        size += len(event.data)
                        if size > limit:
                            raise _too_large(limit)
                        await out.write(event.data)
                    elif isinstance(event, Data) and current is not None:
                        fields[current] += event.data
                if isinstance(event, Epilogue):
                    break
        except RequestEntityTooLarge:  # a form field past FORM_OVERHEAD, or too many parts
            raise GatewayError(413, "a form field is too large, or there are too many parts",
                               "request_too_large") from None
        except ValueError as exc:  # the decoder's complaint about a malformed body
            raise GatewayError(400, f"not a valid multipart body: {exc}", "invalid_request") from None
        return filename, fields


def _ok(body: dict[str, Any]) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return 200, json.dumps(body).encode(), [_JSON]


async def _json(headers: dict[bytes, bytes], receive: Any) -> dict[str, Any]:
    refuse_declared_length(headers, MAX_JSON_BODY)
    raw = await read_body(receive, limit=MAX_JSON_BODY)
    try:
        body = decode_json(raw)
    except InvalidJson as exc:
        raise GatewayError(400, str(exc), "invalid_json") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "the request body must be a JSON object", "invalid_json")
    return body


def _limit(query: dict[str, str], most: int) -> int:
    value = query.get("limit", "20")
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise GatewayError(400, f"limit must be a whole number from 1 to {most}", "invalid_value", param="limit")
    return int(value)


def _no_file(file_id: str) -> GatewayError:
    return GatewayError(404, f"no file {file_id[:100]!r}", "not_found", param="file_id")


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"the file is larger than {limit} bytes", "file_too_large", param="file")


def _allowed(parts: list[str]) -> str | None:
    """The methods a known path takes (for 405), or None for an unknown path."""
    match parts:
        case ["files"] | ["batches"]:
            return "GET, POST"
        case ["files", _]:
            return "GET, DELETE"
        case ["files", _, "content"] | ["batches", _]:
            return "GET"
        case ["batches", _, "cancel"]:
            return "POST"
    return None


class BatchFront:
    """ASGI in front of the plane: the Files/Batches paths to `api`, the rest to `inner`."""

    def __init__(self, api: BatchApi, inner: Any):
        self.api, self.inner = api, inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and is_batch_path(scope["path"]):
            await self.api(scope, receive, send)
        else:
            await self.inner(scope, receive, send)
