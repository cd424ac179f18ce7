"""The console's read-only pages: sign-in, overview, nodes, deployments, hub, tenants, usage, sessions,
audit log, users; and its two static files."""

from __future__ import annotations

from typing import Any

import trio
from quart import Response, request

from runtime.api.principals import ROLES, tenant_scope
from runtime.api.responses import ApiError
from runtime.console.charts import usage_chart
from runtime.console.context import HERE, PREFIX, ConsoleParts, Denied, need, page, who

ASSETS = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
MAX_AUDIT_ROWS = 200
NODES_PER_PAGE = 100


def overview_data(parts: ConsoleParts, page: int | None = 0) -> dict[str, Any]:
    """Nodes, deployments and models as the overview and its live feed show them.

    `page`: which NODES_PER_PAGE nodes to list (those not ready first), so a page of a
    thousand-node fleet stays small; None lists them all.
    """
    if parts.scheduler is None:
        return {"nodes": [], "deployments": [], "models": [], "node_counts": {}, "node_total": 0, "page": 0,
                "pages": 1}
    status = parts.status()
    nodes = sorted(status["nodes"], key=lambda n: (n["state"] == "ready", n["name"]))
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node["state"]] = counts.get(node["state"], 0) + 1
    pages = max(1, -(-len(nodes) // NODES_PER_PAGE))
    if page is not None:
        page = min(max(page, 0), pages - 1)
        nodes = nodes[page * NODES_PER_PAGE:(page + 1) * NODES_PER_PAGE]
    nodes = [{**node, "vram_mb": sum(g["vram_mb"] or 0 for g in node["gpus"])} for node in nodes]
    return {**status, "nodes": nodes, "node_counts": counts, "node_total": len(status["nodes"]),
            "page": page or 0, "pages": pages}


def node_view(parts: ConsoleParts, node_id: str, *, show_logs: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A node and its replicas, each with the last lines of its worker log when `show_logs`
    (worker output may hold anything a worker printed: never for a tenant role); Denied 404 if none."""
    data = overview_data(parts, None)
    node = next((n for n in data["nodes"] if n["node_id"] == node_id), None)
    if node is None:
        raise Denied(404, f"no node {node_id!r}")
    replicas = [{**r, "service": d["service"],
                 "log": parts.scheduler.worker_log(r["replica_id"]) if show_logs else ()}
                for d in data["deployments"] for r in d.get("replicas", []) if r.get("node_id") == node_id]
    return node, replicas


def page_arg() -> int:
    """The ?page= of a listing (0 when absent or not a number)."""
    try:
        return max(0, int(request.args.get("page", "0")))
    except ValueError:
        return 0


def scope_of(asked: str | None) -> str | None:
    """The tenant a listing shows for this principal (Denied 404 for another tenant's)."""
    try:
        return tenant_scope(who(), asked or None)
    except ApiError as exc:
        raise Denied(exc.status, exc.detail) from None


def register(app: Any, parts: ConsoleParts) -> None:
    """Add the read-only pages."""

    @app.get(f"{PREFIX}/assets/<name>")
    async def console_asset(name: str) -> Response:
        if name not in ASSETS:
            return Response("no such file", 404, {"Content-Type": "text/plain; charset=utf-8"})
        body = await trio.to_thread.run_sync((HERE / "static" / name).read_bytes)
        return Response(body, 200, {"Content-Type": ASSETS[name], "Cache-Control": "max-age=300",
                                    "X-Content-Type-Options": "nosniff"})

    @app.get(f"{PREFIX}/signin")
    async def console_signin() -> Response:
        target = request.args.get("next", PREFIX)
        if not target.startswith("/") or target.startswith("//"):
            target = PREFIX
        return page("signin.html", title="Sign in", next=target)

    @app.get(PREFIX)
    async def console_overview() -> Response:
        principal = who()
        if not principal.is_global:  # a tenant role has no cluster view: its tenant is its home
            return Response("", 303, {"Location": f"{PREFIX}/tenants"})
        need("cluster.read")
        events: list[dict] = []
        if principal.is_global:
            rows = await trio.to_thread.run_sync(lambda: parts.access.audit.entries(limit=200))
            events = [r for r in rows if "/deployments" in r["target"] or "/cluster" in r["target"]][:10]
        return page("overview.html", title="Overview", data=overview_data(parts, page_arg()), events=events)

    @app.get(f"{PREFIX}/nodes/<node_id>")
    async def console_node(node_id: str) -> Response:
        principal = need("cluster.read")
        node, replicas = node_view(parts, node_id, show_logs=principal.is_global)
        return page("node.html", title=f"Node {node['name']}", node=node, replicas=replicas,
                    show_logs=principal.is_global)

    @app.get(f"{PREFIX}/deployments")
    async def console_deployments() -> Response:
        need("cluster.read")
        services: list[str] = []
        if parts.hub is not None:
            services = [s.service_id for s in await trio.to_thread.run_sync(parts.hub.catalog.services)]
        return page("deployments.html", title="Deployments", data=overview_data(parts), services=services,
                    notice=request.args.get("notice", ""))

    @app.get(f"{PREFIX}/hub")
    async def console_hub() -> Response:
        need("cluster.read")
        if parts.hub is None:
            raise Denied(404, "no hub runs in this plane process")
        catalog = parts.hub.catalog
        services, ranking = await trio.to_thread.run_sync(lambda: (catalog.services(), catalog.ranking(20)))
        return page("hub.html", title="Hub", services=services, ranking=ranking,
                    notice=request.args.get("notice", ""))

    @app.get(f"{PREFIX}/tenants")
    async def console_tenants() -> Response:
        principal = need("tenants.read")
        if parts.keys is None:
            raise Denied(404, "no gateway runs in this plane process")
        store = parts.keys.store
        tenants = [t for t in await parts.keys.run_store(store.tenants)
                   if principal.tenant is None or t["name"] == principal.tenant]
        keys = await parts.keys.run_store(store.keys, principal.tenant)
        return page("tenants.html", title="Tenants & keys", tenants=tenants, keys=keys,
                    notice=request.args.get("notice", ""), new_key=None)

    @app.get(f"{PREFIX}/usage")
    async def console_usage() -> Response:
        need("usage.read")
        if parts.keys is None:
            raise Denied(404, "no gateway runs in this plane process")
        tenant = scope_of(request.args.get("tenant"))
        await parts.keys.flush()
        rows = await parts.keys.run_store(parts.keys.store.usage, tenant)
        metric = request.args.get("metric", "requests")
        if metric not in ("requests", "prompt_tokens", "completion_tokens", "audio_seconds"):
            raise Denied(400, f"metric {metric!r} is not one of requests, prompt_tokens, completion_tokens, "
                              "audio_seconds")
        return page("usage.html", title="Usage", rows=rows[-500:], metric=metric, tenant=tenant or "",
                    chart=usage_chart(rows, metric))

    @app.get(f"{PREFIX}/sessions")
    async def console_sessions() -> Response:
        principal = need("sessions.read")
        if parts.sessions is None:
            raise Denied(404, "no gateway runs in this plane process")
        found = parts.sessions.list(principal.tenant) if principal.tenant else parts.sessions.list_all()
        return page("sessions.html", title="Sessions", sessions=[{**s.to_json(), "tenant": s.tenant} for s in found],
                    notice=request.args.get("notice", ""))

    @app.get(f"{PREFIX}/audit")
    async def console_audit() -> Response:
        principal = need("audit.read")
        rows = await trio.to_thread.run_sync(lambda: parts.access.audit.entries(
            tenant=principal.tenant, limit=MAX_AUDIT_ROWS))
        return page("audit.html", title="Audit log", rows=rows)

    @app.get(f"{PREFIX}/users")
    async def console_users() -> Response:
        need("users.read")
        users = await trio.to_thread.run_sync(parts.access.users.users)
        return page("users.html", title="Users", users=users, roles=ROLES, notice=request.args.get("notice", ""))
