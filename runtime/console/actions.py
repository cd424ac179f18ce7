"""The console's forms that change state: each checks the role, then calls the plane's own service.

The access guard in front has already checked the session's CSRF token and a same-origin
Origin for every POST under /ui, and writes the audit row after the reply (the notes here
name the tenant or object acted on). A refused or failed change comes back to the page it
came from as a one-line notice, nothing half-done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
from quart import Response, request

from hub_store.errors import StoreError
from runtime.api.guard import note_audit, request_secure
from runtime.api.responses import ApiError
from runtime.api.signin import session_cookie
from runtime.console.context import (
    PREFIX,
    SECURITY_HEADERS,
    ConsoleParts,
    Denied,
    done,
    need,
    page,
    who,
)
from runtime.errors import FlowError
from runtime.gateway.keys import LIMIT_FIELDS, Limits

FLAGS = {"stable": {"stable": True}, "unstable": {"stable": False}, "yank": {"yanked": True},
         "unyank": {"yanked": False}}
MAX_FIELD = 200


async def form() -> dict[str, str]:
    """The posted form's fields (each trimmed, at most MAX_FIELD characters)."""
    data = await request.form
    return {k: (data.get(k) or "").strip()[:MAX_FIELD] for k in data}


def count(value: str, name: str, low: int = 0, high: int = 1000) -> int:
    """A whole number field in [low, high], else Denied 400 naming it."""
    try:
        number = int(value)
    except ValueError:
        raise Denied(400, f"{name} must be a whole number, not {value!r}") from None
    if not low <= number <= high:
        raise Denied(400, f"{name} must be between {low} and {high}, not {number}")
    return number


async def attempt(back: str, change: Callable[[], Awaitable[str]]) -> Response:
    """Run a change; back to `back` with its notice, or with the one-line reason it failed."""
    try:
        return done(back, await change())
    except Denied:
        raise
    except (FlowError, StoreError, ApiError, ValueError, KeyError) as exc:
        message = exc.detail if isinstance(exc, ApiError) else str(exc)
        return done(back, f"error: {message}")


def running(part: Any, role: str) -> Any:
    """`part` when its role runs in this plane process, else Denied 404 naming the role."""
    if part is None:
        raise Denied(404, f"the {role} role does not run in this plane process")
    return part


def register(app: Any, parts: ConsoleParts) -> None:
    """Add the forms' POST routes."""

    @app.post(f"{PREFIX}/signout")
    async def console_signout() -> Response:
        principal = who()
        if principal.session_id is not None:
            await trio.to_thread.run_sync(parts.access.users.close_session, principal.session_id)
        return Response("", 303, {"Location": f"{PREFIX}/signin", **SECURITY_HEADERS,
                                  "Set-Cookie": session_cookie("", secure=request_secure(request), max_age=0)})

    @app.post(f"{PREFIX}/deployments")
    async def console_deploy() -> Response:
        need("cluster.write")
        running(parts.scheduler, "scheduler")
        fields = await form()
        service, version = fields.get("service", ""), fields.get("version") or "latest"
        replicas = count(fields.get("replicas") or "1", "replicas")
        if not service:
            raise Denied(400, "give the service to deploy")

        async def deploy() -> str:
            dep = await parts.scheduler.deploy(service, version, replicas=replicas)
            parts.changed()
            return f"deployed {dep.service_id}@{dep.version} with {dep.replicas} replica(s)"
        return await attempt(f"{PREFIX}/deployments", deploy)

    @app.post(f"{PREFIX}/deployments/<service>/scale")
    async def console_scale(service: str) -> Response:
        need("cluster.write")
        running(parts.scheduler, "scheduler")
        replicas = count((await form()).get("replicas", ""), "replicas")

        async def scale() -> str:
            await parts.scheduler.scale(service, replicas)
            parts.changed()
            return f"scaled {service} to {replicas} replica(s)"
        return await attempt(f"{PREFIX}/deployments", scale)

    @app.post(f"{PREFIX}/deployments/<service>/undeploy")
    async def console_undeploy(service: str) -> Response:
        need("cluster.write")
        running(parts.scheduler, "scheduler")

        async def undeploy() -> str:
            await parts.scheduler.undeploy(service)
            parts.changed()
            return f"undeployed {service}"
        return await attempt(f"{PREFIX}/deployments", undeploy)

    @app.post(f"{PREFIX}/hub/<service>/<version>/<action>")
    async def console_flag(service: str, version: str, action: str) -> Response:
        need("hub.write")
        if action not in FLAGS or parts.hub is None:
            raise Denied(404, f"no action {action!r} (one of {', '.join(FLAGS)})")

        async def flag() -> str:
            await trio.to_thread.run_sync(lambda: parts.hub.catalog.set_flags(service, version, **FLAGS[action]))
            return f"{service} {version}: {action} done"
        return await attempt(f"{PREFIX}/hub", flag)

    @app.post(f"{PREFIX}/tenants")
    async def console_create_tenant() -> Response:
        need("tenants.write")
        running(parts.keys, "gateway")
        name = (await form()).get("name", "")
        note_audit(request, tenant=name[:64])

        async def create() -> str:
            await parts.keys.run_store(parts.keys.store.create_tenant, name, Limits())
            return f"tenant {name} created"
        return await attempt(f"{PREFIX}/tenants", create)

    @app.post(f"{PREFIX}/tenants/<name>/limits")
    async def console_tenant_limits(name: str) -> Response:
        need("tenants.write")
        running(parts.keys, "gateway")
        fields = await form()
        note_audit(request, tenant=name[:64])
        # An empty field is unlimited, as null is in PATCH /api/gateway/tenants/{name}.
        changes = {f: (count(fields[f], f, 1, 10**9) if fields[f] else None) for f in LIMIT_FIELDS if f in fields}
        if not changes:
            raise Denied(400, f"give at least one of {', '.join(LIMIT_FIELDS)}")

        async def update() -> str:
            tenant = await parts.keys.run_store(parts.keys.store.update_tenant, name, changes)
            parts.keys._tenant_changed(tenant)  # cached keys and open sessions get the new limits at once
            return f"limits of {name} set"
        return await attempt(f"{PREFIX}/tenants", update)

    @app.post(f"{PREFIX}/keys")
    async def console_create_key() -> Response:
        fields = await form()
        tenant = fields.get("tenant", "")
        principal = need("keys.write", tenant)
        running(parts.keys, "gateway")
        note_audit(request, tenant=tenant[:64])
        try:
            key, record = await parts.keys.run_store(parts.keys.store.create_key, tenant, name=fields.get("name", ""))
        except (FlowError, ValueError) as exc:
            return done(f"{PREFIX}/tenants", f"error: {exc}")
        store = parts.keys.store
        tenants = [t for t in await parts.keys.run_store(store.tenants)
                   if principal.tenant is None or t["name"] == principal.tenant]
        keys = await parts.keys.run_store(store.keys, principal.tenant)
        # The key is in this one reply only (no-store), never in a redirect's URL or a later page.
        return page("tenants.html", 201, title="Tenants & keys", tenants=tenants, keys=keys, notice="",
                    new_key={"key": key, "key_id": record.key_id, "tenant": record.tenant})

    @app.post(f"{PREFIX}/keys/<key_id>/revoke")
    async def console_revoke_key(key_id: str) -> Response:
        need("keys.write")
        running(parts.keys, "gateway")

        async def revoke() -> str:
            record = await parts.keys.run_store(parts.keys.store.key, key_id)
            need("keys.write", record.tenant)
            note_audit(request, tenant=record.tenant)
            await parts.keys.run_store(parts.keys.store.revoke, key_id)
            parts.keys._revoked([key_id])  # the key's cache entry and open sessions go with it
            return f"key {key_id} revoked"
        return await attempt(f"{PREFIX}/tenants", revoke)

    @app.post(f"{PREFIX}/sessions/<session_id>/close")
    async def console_close_session(session_id: str) -> Response:
        principal = need("sessions.write")
        running(parts.sessions, "gateway")

        async def close() -> str:
            found = next((s for s in parts.sessions.list_all() if s.session_id == session_id), None)
            if found is None or (principal.tenant is not None and found.tenant != principal.tenant):
                raise Denied(404, f"no session {session_id!r}")
            note_audit(request, tenant=found.tenant)
            parts.sessions.delete(session_id, found.tenant, reason="closed from the console")
            return f"session {session_id} closed"
        return await attempt(f"{PREFIX}/sessions", close)

    @app.post(f"{PREFIX}/users")
    async def console_create_user() -> Response:
        need("users.write")
        fields = await form()

        async def create() -> str:
            user = await trio.to_thread.run_sync(lambda: parts.access.users.create_user(
                fields.get("name", ""), fields.get("role", ""), fields.get("password", ""),
                fields.get("tenant") or None))
            return f"user {user.name} ({user.role}) created"
        return await attempt(f"{PREFIX}/users", create)

    @app.post(f"{PREFIX}/users/<name>/delete")
    async def console_delete_user(name: str) -> Response:
        need("users.write")

        async def delete() -> str:
            await trio.to_thread.run_sync(parts.access.users.delete_user, name)
            return f"user {name} removed"
        return await attempt(f"{PREFIX}/users", delete)

    @app.post(f"{PREFIX}/users/<name>/role")
    async def console_user_role(name: str) -> Response:
        need("users.write")
        fields = await form()

        async def change() -> str:
            user = await trio.to_thread.run_sync(lambda: parts.access.users.update_user(
                name, fields.get("role", ""), fields.get("tenant") or None))
            return f"user {user.name} is now {user.role}" + (f" of {user.tenant}" if user.tenant else "")
        return await attempt(f"{PREFIX}/users", change)

    @app.post(f"{PREFIX}/users/<name>/password")
    async def console_user_password(name: str) -> Response:
        need("users.write")
        password = (await request.form).get("password") or ""  # not trimmed: spaces are part of it

        async def reset() -> str:
            await trio.to_thread.run_sync(parts.access.users.set_password, name, password)
            return f"password of {name} reset; its browser sessions ended"
        return await attempt(f"{PREFIX}/users", reset)
