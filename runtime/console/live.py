"""Live updates over server-sent events: the overview's node and deployment tables as they change.

Each event carries one re-rendered fragment ({"id": element id, "html": ...}) and is sent only
when that fragment changed, so a page is never polled whole; static/console.js swaps it in.
A stream lasts at most MAX_STREAM_S (the browser's EventSource reconnects by itself).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio
from quart import Response, request

from runtime.console.context import ENV, PREFIX, ConsoleParts, Denied, need
from runtime.console.pages import node_view, overview_data, page_arg

INTERVAL_S = 1.0
MAX_STREAM_S = 300.0
KEEPALIVE_S = 15.0
FRAGMENTS = (("nodes", "_nodes.html"), ("deployments", "_deployments.html"))


def fragments(parts: ConsoleParts, *, can_write: bool, csrf: str, page: int = 0) -> dict[str, str]:
    """{element id: its HTML now}."""
    data = overview_data(parts, page)
    return {name: ENV.get_template(template).render(data=data, can_write=can_write, csrf=csrf)
            for name, template in FRAGMENTS}


def node_fragments(parts: ConsoleParts, node_id: str, *, show_logs: bool) -> dict[str, str]:
    """{"replicas": the node page's replica table and worker logs now}."""
    try:
        _, replicas = node_view(parts, node_id, show_logs=show_logs)
    except Denied:
        replicas = []  # the node is gone: its page shows no replica any more
    return {"replicas": ENV.get_template("_node_replicas.html").render(replicas=replicas, show_logs=show_logs)}


async def status_events(parts: ConsoleParts, *, can_write: bool, csrf: str, page: int = 0) -> AsyncIterator[bytes]:
    """SSE: a `fragment` event per changed overview fragment (heartbeat ages tick once a second)."""
    async def render() -> tuple[dict[str, str], bool]:
        return fragments(parts, can_write=can_write, csrf=csrf, page=page), False
    async for event in fragment_events(render):
        yield event


async def fragment_events(render: Callable[[], Awaitable[tuple[dict[str, str], bool]]]) -> AsyncIterator[bytes]:
    """SSE: a `fragment` event per fragment of `render()` ({id: html}, final) that changed, checked
    every INTERVAL_S; after a final one, an `end` event (the page's script stops listening)."""
    sent: dict[str, str] = {}
    quiet = 0.0
    yield b"retry: 2000\n\n"
    with trio.move_on_after(MAX_STREAM_S):
        while True:
            changed = False
            now, final = await render()
            for name, html in now.items():
                if sent.get(name) != html:
                    sent[name] = html
                    changed = True
                    yield f"event: fragment\ndata: {json.dumps({'id': name, 'html': html})}\n\n".encode()
            if final:
                yield b"event: end\ndata: {}\n\n"
                return
            quiet = 0.0 if changed else quiet + INTERVAL_S
            if quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield b": keepalive\n\n"
            await trio.sleep(INTERVAL_S)


def register(app: Any, parts: ConsoleParts) -> None:
    """Add the live feeds."""
    from runtime.api.guard import csrf_token_for
    from runtime.api.principals import allowed

    @app.get(f"{PREFIX}/live/status")
    async def console_live_status() -> Response:
        principal = need("cluster.read")
        forms = request.args.get("forms") == "1"  # the deployments page's table has the scale forms
        stream = status_events(parts, can_write=forms and allowed(principal, "cluster.write"),
                               csrf=csrf_token_for(principal) or "", page=page_arg())
        return Response(stream, 200, {"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                      "X-Accel-Buffering": "no"})

    @app.get(f"{PREFIX}/live/nodes/<node_id>")
    async def console_live_node(node_id: str) -> Response:
        principal = need("cluster.read")
        node_view(parts, node_id, show_logs=False)  # 404 for a node that is not there
        async def render() -> tuple[dict[str, str], bool]:
            return node_fragments(parts, node_id, show_logs=principal.is_global), False
        stream = fragment_events(render)
        return Response(stream, 200, {"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                      "X-Accel-Buffering": "no"})
