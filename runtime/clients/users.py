"""A client for the plane's users and audit APIs (what `flowctl users` and `flowctl audit` call)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from runtime.clients.plane import PlaneClient

PREFIX = "/api/v1"


def _user(name: str) -> str:
    return f"{PREFIX}/users/{quote(name, safe='')}"


class UsersClient(PlaneClient):
    """Users, their personal access tokens, and the audit log; `with UsersClient(url, token=...)`.

    Error handling: every failure is a PlaneError (`status` None when unreachable).
    """

    def create_user(self, name: str, role: str, password: str, tenant: str | None = None) -> dict[str, Any]:
        """A new user with a role (and a tenant for the tenant roles)."""
        body = {"name": name, "role": role, "password": password, **({"tenant": tenant} if tenant else {})}
        return self._json("POST", f"{PREFIX}/users", json_body=body)

    def users(self) -> list[dict[str, Any]]:
        """Every user."""
        return self._json("GET", f"{PREFIX}/users")

    def delete_user(self, name: str) -> None:
        """Remove a user with its tokens and sessions."""
        self._json("DELETE", _user(name))

    def set_password(self, name: str, password: str, current: str | None = None) -> None:
        """Set a user's password (a user's own needs the current one)."""
        body = {"password": password, **({"current_password": current} if current else {})}
        self._json("PUT", f"{_user(name)}/password", json_body=body)

    def create_token(self, user: str, name: str = "", expires_at: float | None = None) -> dict[str, Any]:
        """A new personal access token: the reply holds it, shown this once."""
        return self._json("POST", f"{_user(user)}/tokens", json_body={"name": name, "expires_at": expires_at})

    def tokens(self, user: str) -> list[dict[str, Any]]:
        """A user's tokens (never the tokens themselves)."""
        return self._json("GET", f"{_user(user)}/tokens")

    def revoke_token(self, user: str, token_id: str) -> None:
        """Revoke a token: it stops working at once."""
        self._json("DELETE", f"{_user(user)}/tokens/{quote(token_id, safe='')}")

    def audit(self, *, since: float | None = None, user: str | None = None, tenant: str | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
        """Audit entries, newest first."""
        params = {k: str(v) for k, v in (("since", since), ("user", user), ("tenant", tenant), ("limit", limit))
                  if v is not None}
        return self._json("GET", f"{PREFIX}/audit", params=params or None)["entries"]
