"""Who acts on the admin APIs (a Principal) and what each role may do (`authorize`).

Roles: `admin` (everything), `operator` (nodes, deployments, hub, jobs; reads the rest, not
users), `viewer` (reads everything but users), `tenant-admin` (its tenant's keys, sessions,
jobs, usage, audit), `tenant-viewer` (reads those). The plane's admin key is the built-in
admin. A tenant role asking for another tenant's object gets 404, as if it did not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.api.responses import ApiError

ROLES = ("admin", "operator", "viewer", "tenant-admin", "tenant-viewer")
TENANT_ROLES = frozenset({"tenant-admin", "tenant-viewer"})
# Every action an admin API checks; `.read` ones change nothing.
ACTIONS = ("cluster.read", "cluster.write", "hub.write", "tenants.read", "tenants.write", "keys.read",
           "keys.write", "usage.read", "sessions.read", "sessions.write", "jobs.read", "jobs.write",
           "users.read", "users.write", "audit.read", "self")
_READS = frozenset(a for a in ACTIONS if a.endswith(".read") and a != "users.read") | {"self"}
_TENANT_READS = frozenset({"tenants.read", "keys.read", "usage.read", "sessions.read", "jobs.read", "audit.read",
                           "self"})
GRANTS: dict[str, frozenset[str]] = {
    "admin": frozenset(ACTIONS),
    "operator": _READS | {"cluster.write", "hub.write", "jobs.write"},
    "viewer": _READS,
    "tenant-admin": _TENANT_READS | {"keys.write", "sessions.write", "jobs.write"},
    "tenant-viewer": _TENANT_READS,
}
# How a principal was recognised.
KINDS = ("admin-key", "token", "session")


@dataclass(frozen=True)
class Principal:
    """A user (or the admin key) acting on the admin APIs.

    `tenant` is set for the tenant roles only: None means every tenant. `session_id` and
    `csrf_token` are set when it signed in with a browser session (kind "session"),
    `token_id` when it came with a personal access token.
    """

    name: str
    role: str
    tenant: str | None = None
    kind: str = "admin-key"
    token_id: str | None = None
    session_id: str | None = None
    csrf_token: str | None = None

    @property
    def is_global(self) -> bool:
        """Whether it sees every tenant (admin, operator, viewer)."""
        return self.role not in TENANT_ROLES

    def public(self) -> dict[str, str | None]:
        """What `GET /api/v1/auth/me` shows (never a secret but the session's own CSRF token)."""
        return {"name": self.name, "role": self.role, "tenant": self.tenant, "kind": self.kind,
                **({"csrf_token": self.csrf_token} if self.csrf_token else {})}


ADMIN_KEY_PRINCIPAL = Principal("admin", "admin", kind="admin-key")


def allowed(principal: Principal, action: str) -> bool:
    """Whether the principal's role may do `action` at all (tenant aside)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    return action in GRANTS.get(principal.role, frozenset())


def authorize(principal: Principal | None, action: str, tenant: str | None = None) -> Principal:
    """The principal, when it may do `action` (on `tenant`'s object); else ApiError 401, 403 or 404.

    404 (not 403) for another tenant's object, so a tenant role cannot tell what exists.
    """
    if principal is None:
        raise ApiError(401, "this needs the admin key, a personal access token (fcp_...) or a signed-in session",
                       {"WWW-Authenticate": "Bearer"})
    if not allowed(principal, action):
        raise ApiError(403, f"role {principal.role} may not {action}")
    if tenant is not None and principal.tenant is not None and tenant != principal.tenant:
        raise ApiError(404, f"no such {action.split('.')[0].rstrip('s')} in tenant {principal.tenant!r}")
    return principal


def tenant_scope(principal: Principal | None, asked: str | None) -> str | None:
    """The tenant a listing shows: a tenant role's own (404 for another asked for), else `asked` (None: all)."""
    if principal is None or principal.tenant is None:
        return asked
    if asked is not None and asked != principal.tenant:
        raise ApiError(404, f"no tenant {asked!r}")
    return principal.tenant
