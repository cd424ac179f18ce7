"""The gateway's key service: authentication with a revocable cache, batched usage, the admin API.

The admin API (admin key only) is a small ASGI app under /api/gateway/:
    GET/POST /api/gateway/tenants, PATCH/DELETE /api/gateway/tenants/{name}
    GET/POST /api/gateway/keys[?tenant=T], DELETE /api/gateway/keys/{key_id}
    GET /api/gateway/usage[?tenant=T]

Errors are the admin APIs' `{"detail": message}` (docs/api-errors.md), with WWW-Authenticate
on a 401 and Allow on a 405. Bodies are JSON objects of at most 64 KiB (a larger declared
length is refused unread) that must arrive within `admin_body_timeout` seconds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import trio

from hub_store import sql
from runtime.api import bearer_ok, error_body
from runtime.api.guard import note_audit, principal_of
from runtime.dispatch.limits import Limits, Principal
from runtime.gateway.body import read_body, refuse_declared_length
from runtime.gateway.errors import GatewayError
from runtime.gateway.keys import LIMIT_FIELDS, KeyStore, KeyStoreError, parse_key, tenant_limits
from runtime.http.jsonbody import InvalidJson, decode_json

log = logging.getLogger("flowctl.gateway")
CACHE_TTL = 30.0
# With a state shared by several planes, a key revoked (or a tenant changed) through another
# plane is seen here within this many seconds: no plane drops another's cached principals.
SHARED_CACHE_TTL = 2.0
USAGE_FLUSH_INTERVAL = 1.0  # usage reaches the state store at most this late, one transaction per flush
USAGE_FLUSH_ROWS = 1000  # or as soon as this many (day, tenant, key, model, via) rows wait
USAGE_SHUTDOWN_WAIT = 5.0  # the last flush at shutdown gives up after this long (a dead database)
MAX_ADMIN_BODY = 64 * 1024
DEFAULT_ADMIN_BODY_TIMEOUT = 10.0
_JSON = (b"content-type", b"application/json")
MAX_LIMIT = 2**63 - 1  # SQLite's INTEGER
ANONYMOUS_KEY_ID = "anonymous"  # the limiter's and usage rows' subject of a request without a key
KEY_LIMITS = ("rpm", "tpm", "max_concurrency")  # a tenant has these and max_sessions
# (first path part after /api/gateway/, number of parts) -> the methods _admin serves there.
ADMIN_METHODS = {("tenants", 1): "GET, POST", ("tenants", 2): "PATCH, DELETE", ("keys", 1): "GET, POST",
                 ("keys", 2): "DELETE", ("usage", 1): "GET"}


class KeyService:
    """Keys, tenants and usage over a KeyStore, with every SQLite call in a bounded thread pool."""

    def __init__(self, store: KeyStore, admin_key_hash: str, *, threads: int = 4,
                 admin_body_timeout: float = DEFAULT_ADMIN_BODY_TIMEOUT,
                 anonymous_tenant: str | None = None) -> None:
        self.store = store
        # Requests without an Authorization header are served as this tenant (None: refused, 401).
        self.anonymous_tenant = anonymous_tenant
        self.admin_key_hash = admin_key_hash
        self.admin_body_timeout = admin_body_timeout
        self.limiter = trio.CapacityLimiter(threads)
        self.cache_ttl = CACHE_TTL
        self._cache: dict[str, tuple[str, Principal, float]] = {}  # key_id -> (digest, who, until)
        # Bumped whenever cached principals are dropped, so a lookup that read the store before
        # a revocation or a change of limits does not put its stale answer back in the cache.
        self._generation = 0
        # (day, tenant, key_id, model, via) -> [requests, prompt, completion, audio seconds]
        self._pending: dict[tuple[str, str, str, str, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
        self._flush_soon = trio.Event()
        self._on_revoked: list[Callable[[list[str], str | None], None]] = []
        self._on_tenant_changed: list[Callable[[str, Limits], None]] = []

    @classmethod
    def open(cls, data_dir: Path | sql.State, admin_key_hash: str, *,
             anonymous_tenant: str | None = None) -> KeyService:
        """The service over data_dir/gateway.db (or the plane's state); an anonymous tenant is created
        (without limits) if missing."""
        shared = isinstance(data_dir, sql.State) and data_dir.kind == "postgresql"
        store = KeyStore(data_dir if isinstance(data_dir, sql.State) else data_dir / "gateway.db")
        if anonymous_tenant is not None:
            try:
                store.tenant(anonymous_tenant)
            except KeyStoreError:
                store.create_tenant(anonymous_tenant)
                log.warning("created tenant %r for requests without an API key; it has no limits until "
                            "they are set (PATCH /api/gateway/tenants/%s)", anonymous_tenant, anonymous_tenant)
        service = cls(store, admin_key_hash, anonymous_tenant=anonymous_tenant)
        if shared:
            service.cache_ttl = SHARED_CACHE_TTL
        return service

    def on_revoked(self, callback: Callable[[list[str], str | None], None]) -> None:
        """Call `callback(key_ids, tenant)` once keys are revoked; `tenant` when it was removed, else None."""
        self._on_revoked.append(callback)

    def on_tenant_changed(self, callback: Callable[[str, Limits], None]) -> None:
        """Call `callback(tenant, limits)` once a tenant's limits were changed."""
        self._on_tenant_changed.append(callback)

    def _revoked(self, key_ids: list[str], tenant: str | None = None) -> None:
        self._generation += 1
        for key_id in key_ids:
            self._cache.pop(key_id, None)  # revocation is effective at once
        if tenant is not None and tenant == self.anonymous_tenant:
            self._cache.pop(ANONYMOUS_KEY_ID, None)
        for callback in self._on_revoked:
            callback(key_ids, tenant)

    def _tenant_changed(self, tenant: dict) -> None:
        self._generation += 1
        # New limits are effective at once: the tenant's keys are looked up afresh.
        for key_id in [k for k, (_, who, _) in self._cache.items() if who.tenant == tenant["name"]]:
            del self._cache[key_id]
        for callback in self._on_tenant_changed:
            callback(tenant["name"], tenant_limits(tenant))

    async def run_store(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call a KeyStore method off the event loop."""
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.limiter)

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of `Authorization: Bearer <key>`, or 401 (the key never appears in the error).

        With an anonymous tenant, a request with no Authorization header at all is that tenant's
        (key id "anonymous", the tenant's limits); a header that is wrong is a 401 all the same.
        """
        if authorization is None and self.anonymous_tenant is not None:
            return await self._anonymous(self.anonymous_tenant)
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        parsed = parse_key(token) if scheme.lower() == "bearer" else None
        if parsed is None:
            # Missing and malformed told apart: a client sending another product's key learns why.
            reason = ("this is not a flowctl API key (expected Authorization: Bearer fgk_...)" if token
                      else "no API key was given (Authorization: Bearer fgk_...)")
            raise GatewayError(401, reason, "invalid_api_key")
        key_id, digest = parsed
        cached = self._cache.get(key_id)
        now = trio.current_time()
        if cached is not None and cached[2] > now and cached[0] == digest:
            return cached[1]
        generation = self._generation
        who = await self.run_store(self.store.principal, token)
        if who is None:
            self._cache.pop(key_id, None)
            raise GatewayError(401, "this API key is not valid (unknown, revoked or expired)", "invalid_api_key")
        record = await self.run_store(self.store.key, key_id)
        until = now + self.cache_ttl
        if record.expires_at is not None:
            until = min(until, now + max(0.0, record.expires_at - time.time()))
        if generation == self._generation:
            self._cache[key_id] = (digest, who, until)
        return who

    async def _anonymous(self, tenant: str) -> Principal:
        cached = self._cache.get(ANONYMOUS_KEY_ID)
        now = trio.current_time()
        if cached is not None and cached[2] > now:
            return cached[1]
        generation = self._generation
        try:
            record = await self.run_store(self.store.tenant, tenant)
        except KeyStoreError:
            raise GatewayError(401, f"the anonymous tenant {tenant!r} no longer exists; send an API key "
                                    "(Authorization: Bearer fgk_...)", "invalid_api_key") from None
        who = Principal(tenant, ANONYMOUS_KEY_ID, tenant_limits=tenant_limits(record))
        if generation == self._generation:
            self._cache[ANONYMOUS_KEY_ID] = ("", who, now + self.cache_ttl)
        return who

    def record_usage(self, who: Principal, model: str, prompt: int, completion: int, via: str = "http",
                     audio_seconds: float = 0.0) -> None:
        """Count one request's usage under its via (http, session, job); written to the state store in
        batches by `run` (rows add up there, so several planes' usage sums in one database)."""
        day = time.strftime("%Y-%m-%d", time.gmtime())
        row = self._pending[(day, who.tenant, who.key_id, model, via)]
        row[0] += 1
        row[1] += prompt
        row[2] += completion
        row[3] += audio_seconds
        if len(self._pending) >= USAGE_FLUSH_ROWS:
            self._flush_soon.set()

    async def flush(self) -> None:
        """Write the usage counted so far in one transaction; if that fails it is kept for the next flush."""
        if not self._pending:
            return
        pending, self._pending = self._pending, defaultdict(lambda: [0, 0, 0, 0.0])
        try:
            await self.run_store(self.store.add_usage, [(*k, *v) for k, v in pending.items()])
        except Exception:
            for key, values in pending.items():  # back in front of what was counted meanwhile
                row = self._pending[key]
                for i, value in enumerate(values):
                    row[i] += value
            raise

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush usage every USAGE_FLUSH_INTERVAL (sooner past USAGE_FLUSH_ROWS) until cancelled, then once more.

        A database that cannot be written (PostgreSQL restarting) costs a warning; the rows wait."""
        task_status.started()
        try:
            while True:
                with trio.move_on_after(USAGE_FLUSH_INTERVAL):
                    await self._flush_soon.wait()
                self._flush_soon = trio.Event()
                try:
                    await self.flush()
                except (sql.Error, OSError) as exc:
                    log.warning("gateway: usage not written yet, %d rows kept for the next try: %s",
                                len(self._pending), exc)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(USAGE_SHUTDOWN_WAIT):
                try:
                    await self.flush()
                except (sql.Error, OSError) as exc:
                    log.error("gateway: %d usage rows lost at shutdown: %s", len(self._pending), exc)

    # -- the admin API (its routes: the match in _admin; ADMIN_METHODS mirrors them for 405) ---

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            status, body = await self._admin(scope, receive)
        except KeyStoreError as exc:
            status, body = exc.status, error_body(str(exc))
        except GatewayError as exc:  # the admin APIs' shape, not the OpenAI one of /v1
            data = json.dumps(error_body(exc.message)).encode()
            await send({"type": "http.response.start", "status": exc.status,
                        "headers": [*exc.headers(), (b"content-length", str(len(data)).encode())]})
            await send({"type": "http.response.body", "body": data})
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client went away while sending its body
        data = b"" if status == 204 else json.dumps(body).encode()
        headers = [_JSON, (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _admin(self, scope: dict[str, Any], receive: Any) -> tuple[int, Any]:
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        # A principal was checked against the route's action by the plane's guard; a tenant role's
        # view is narrowed to its tenant below (another tenant's objects are 404).
        who = principal_of(scope)
        if who is None and not bearer_ok(auth, self.admin_key_hash):
            raise GatewayError(401, "the admin key is required", "invalid_admin_key")
        method, parts = scope["method"], scope["path"].split("/")[3:]
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        own = who.tenant if who is not None else None
        if own is not None and len(parts) == 1 and parts[0] in ("keys", "usage"):
            if query.get("tenant", own) != own:
                raise GatewayError(404, f"no tenant {query['tenant']!r}", "not_found")
            query = {**query, "tenant": own}
        store = self.store
        match (method, parts):
            case ("GET", ["tenants"]):
                tenants = await self.run_store(store.tenants)
                return 200, [t for t in tenants if own is None or t["name"] == own]
            case ("POST", ["tenants"]):
                body = await self._json_body(scope, receive)
                note_audit(scope, tenant=str(body.get("name"))[:64])
                return 201, await self.run_store(store.create_tenant, body.get("name"),
                                                 Limits(**_limits(body, LIMIT_FIELDS)))
            case ("PATCH", ["tenants", name]):
                note_audit(scope, tenant=name)
                changes = _changes(await self._json_body(scope, receive))
                tenant = await self.run_store(store.update_tenant, name, changes)
                self._tenant_changed(tenant)
                return 200, tenant
            case ("DELETE", ["tenants", name]):
                note_audit(scope, tenant=name)
                self._revoked(await self.run_store(store.delete_tenant, name), name)
                return 204, None
            case ("GET", ["keys"]):
                return 200, [k.public() for k in await self.run_store(store.keys, query.get("tenant"))]
            case ("POST", ["keys"]):
                body = await self._json_body(scope, receive)
                models = body.get("models") or []
                expires = body.get("expires_at")
                # Stored comma-joined, so a comma would split one pattern into two.
                if not isinstance(models, list) or not all(isinstance(m, str) and m and "," not in m
                                                           for m in models):
                    raise GatewayError(400, "'models' must be a list of patterns (without commas)", "invalid")
                if expires is not None:
                    expires = _unix_time(expires)
                if not isinstance(body.get("tenant"), str):
                    raise GatewayError(400, "'tenant' is required", "invalid")
                if own is not None and body["tenant"] != own:
                    raise GatewayError(404, f"no tenant {body['tenant']!r}", "not_found")
                note_audit(scope, tenant=body["tenant"])
                if not isinstance(body.get("name", ""), str):
                    raise GatewayError(400, "'name' must be a string", "invalid")
                key, record = await self.run_store(store.create_key, body["tenant"], name=body.get("name", ""),
                                                   limits=Limits(**_limits(body, KEY_LIMITS)),
                                                   models=tuple(models), expires_at=expires)
                return 201, {**record.public(), "key": key}
            case ("DELETE", ["keys", key_id]):
                record = await self.run_store(store.key, key_id)
                if own is not None and record.tenant != own:
                    raise GatewayError(404, f"no key {key_id!r}", "not_found")
                note_audit(scope, tenant=record.tenant)
                await self.run_store(store.revoke, key_id)
                self._revoked([key_id])
                return 204, None
            case ("GET", ["usage"]):
                await self.flush()
                return 200, await self.run_store(store.usage, query.get("tenant"))
        allowed = ADMIN_METHODS.get((parts[0], len(parts)) if parts else ("", 0))
        if allowed is not None:
            raise GatewayError(405, f"method {method} is not allowed on {scope['path']} (use {allowed})",
                               "method_not_allowed", allow=allowed)
        raise GatewayError(404, f"no such admin endpoint: {method} {scope['path']}", "not_found")

    async def _json_body(self, scope: dict[str, Any], receive: Any) -> dict:
        refuse_declared_length(dict(scope["headers"]), MAX_ADMIN_BODY)
        raw = await read_body(receive, limit=MAX_ADMIN_BODY, body_timeout=self.admin_body_timeout)
        try:
            body = decode_json(raw)
        except InvalidJson as exc:
            raise GatewayError(400, str(exc), "invalid_json") from None
        if not isinstance(body, dict):
            raise GatewayError(400, "the request body must be a JSON object", "invalid_json")
        return body



def _unix_time(value: Any) -> float:
    # A finite float: SQLite cannot store an int past 2**63, and inf/NaN are not JSON.
    try:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
            raise ValueError(value)
        return float(value)
    except (ValueError, OverflowError):
        raise GatewayError(400, "'expires_at' must be a Unix time", "invalid") from None


def _limits(body: dict, names: tuple[str, ...]) -> dict[str, int | None]:
    """The limits `names` of `body` (None: unlimited), each checked; a 400 names the first bad one."""
    values = {}
    for name in names:
        value = body.get(name)
        low = 0 if name == "max_sessions" else 1  # 0 sessions: the tenant may open none
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not low <= value <= MAX_LIMIT):
            raise GatewayError(400, f"'{name}' must be an integer from {low} to {MAX_LIMIT}", "invalid")
        values[name] = value
    return values


def _changes(body: dict) -> dict[str, int | None]:
    """The limits a PATCH of a tenant sets: only those in the body (null: unlimited)."""
    unknown = sorted(set(body) - set(LIMIT_FIELDS))
    if unknown:
        raise GatewayError(400, f"a tenant's limits are {', '.join(LIMIT_FIELDS)}; not {unknown[0]!r}", "invalid")
    if not body:
        raise GatewayError(400, f"give at least one of {', '.join(LIMIT_FIELDS)}", "invalid")
    return {name: value for name, value in _limits(body, LIMIT_FIELDS).items() if name in body}
