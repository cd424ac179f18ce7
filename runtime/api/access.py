"""Users, sign-in and the audit log as one part of the plane: opened, attached to the app, closed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub_store import sql
from runtime.api import signin, users_routes
from runtime.api.audit import AuditLog
from runtime.api.guard import AccessGuard
from runtime.api.signin import SigninThrottle
from runtime.api.users import UserStore

USERS_DB = "users.db"
AUDIT_DB = "audit.db"


@dataclass
class Access:
    """DATA_DIR/users.db and DATA_DIR/audit.db with the routes over them."""

    users: UserStore
    audit: AuditLog
    throttle: SigninThrottle = field(default_factory=SigninThrottle)

    @classmethod
    def open(cls, data_dir: Path, state: sql.State | None = None) -> Access:
        """Open (or create) both databases: in `data_dir`, or in the plane's state when given."""
        users = UserStore(state or data_dir / USERS_DB)
        try:
            return cls(users, AuditLog(state or data_dir / AUDIT_DB))
        except BaseException:
            users.close()
            raise

    def register(self, app: Any) -> None:
        """The sign-in, users and audit routes on a quart-trio app."""
        signin.register(app, self.users, self.throttle)
        users_routes.register(app, self.users, self.audit)

    def guard(self, asgi_app: Any, admin_key_hash: str, *,
              trusts: Callable[[str | None], bool] = lambda peer: False) -> AccessGuard:
        """`asgi_app` behind the access guard (runtime/api/guard.py)."""
        return AccessGuard(asgi_app, self.users, self.audit, admin_key_hash, trusts=trusts)

    def close(self) -> None:
        """Close both databases."""
        try:
            self.users.close()
        finally:
            self.audit.close()
