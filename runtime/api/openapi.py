"""One OpenAPI description out of the components' parts, and the ASGI app that serves it.

Each component describes its own routes (a `Part`: its paths, schemas and security
schemes, under one tag); `document` joins the parts of the roles a process runs into one
OpenAPI 3.0 document. `ApiDocs` answers GET /openapi.json (that document) and GET /docs
(the interactive explorer, runtime/api/explorer.py) in front of the rest of the app.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from runtime.api.explorer import explorer_html

OPENAPI_VERSION = "3.0.3"
DOCUMENT_PATH = "/openapi.json"
EXPLORER_PATH = "/docs"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True)
class Part:
    """One component's routes: OpenAPI path items, and the components they refer to."""

    tag: str
    description: str
    paths: dict[str, Any]
    schemas: dict[str, Any] = field(default_factory=dict)
    security_schemes: dict[str, Any] = field(default_factory=dict)


class DescriptionConflict(ValueError):
    """Two parts describe the same operation, or name different schemas alike."""


def document(parts: Iterable[Part], *, title: str, version: str, description: str = "") -> dict[str, Any]:
    """The OpenAPI document of `parts`; each operation carries its part's tag.

    Error handling: DescriptionConflict when two parts describe one method of one path,
    or give one schema name two meanings (a later part may repeat an identical schema).
    """
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    schemes: dict[str, Any] = {}
    tags = []
    for part in parts:
        tags.append({"name": part.tag, "description": part.description})
        for path, item in part.paths.items():
            merged = paths.setdefault(path, {})
            for method, operation in item.items():
                if method not in METHODS:
                    merged[method] = copy.deepcopy(operation)  # shared parameters, summary
                    continue
                if method in merged:
                    raise DescriptionConflict(f"{method.upper()} {path} is described twice "
                                              f"({merged[method].get('tags')} and {part.tag!r})")
                merged[method] = {**copy.deepcopy(operation), "tags": [part.tag]}
        _join(schemas, part.schemas, "schema")
        # Security schemes of one name mean the same key everywhere; the first description stays.
        for name, scheme in part.security_schemes.items():
            schemes.setdefault(name, scheme)
    info = {"title": title, "version": version, **({"description": description} if description else {})}
    return {"openapi": OPENAPI_VERSION, "info": info, "tags": tags, "paths": paths,
            "components": {"schemas": schemas, "securitySchemes": schemes}}


def _join(into: dict[str, Any], more: dict[str, Any], what: str) -> None:
    for name, value in more.items():
        if name in into and into[name] != value:
            raise DescriptionConflict(f"two parts define the {what} {name!r} differently")
        into[name] = value


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """{(METHOD, path)} of every operation a document describes."""
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item if method in METHODS}


class ApiDocs:
    """ASGI app: /openapi.json and /docs here, everything else to `fallback`."""

    def __init__(self, doc: dict[str, Any], fallback: Any, *, title: str = "flowctl API") -> None:
        self.body = json.dumps(doc).encode()
        self.page = explorer_html(title, DOCUMENT_PATH).encode()
        self.fallback = fallback

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in (DOCUMENT_PATH, EXPLORER_PATH, EXPLORER_PATH + "/"):
            if scope["method"] not in ("GET", "HEAD"):
                await _reply(send, 405, b'{"detail": "use GET"}', b"application/json", [(b"allow", b"GET, HEAD")])
            elif scope["path"] == DOCUMENT_PATH:
                await _reply(send, 200, self.body, b"application/json", [], head=scope["method"] == "HEAD")
            else:
                await _reply(send, 200, self.page, b"text/html; charset=utf-8", [
                    # Everything the page needs is in it; it talks only to this server.
                    (b"content-security-policy", b"default-src 'none'; script-src 'unsafe-inline'; "
                                                 b"style-src 'unsafe-inline'; connect-src 'self'; img-src data:"),
                    (b"x-content-type-options", b"nosniff")], head=scope["method"] == "HEAD")
            return
        await self.fallback(scope, receive, send)


async def _reply(send: Any, status: int, body: bytes, content_type: bytes, headers: list[tuple[bytes, bytes]],
                 *, head: bool = False) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": b"" if head else body})
