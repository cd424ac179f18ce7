"""What the console reads and changes (the plane's in-process parts), and who is asking."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from quart import Response, current_app, request

from runtime.api.guard import csrf_token_for, principal_of
from runtime.api.principals import Principal, allowed, authorize
from runtime.api.responses import ApiError

PREFIX = "/ui"
SNAPSHOT_S = 1.0
HERE = Path(__file__).resolve().parent
# Navigation: (path, label, the action that shows it, the part that must run here).
NAV = (("/ui", "Overview", "cluster.read", "scheduler"), ("/ui/deployments", "Deployments", "cluster.read", "scheduler"),
       ("/ui/hub", "Hub", "cluster.read", "hub"), ("/ui/tenants", "Tenants & keys", "tenants.read", "keys"),
       ("/ui/usage", "Usage", "usage.read", "keys"), ("/ui/sessions", "Sessions", "sessions.read", "sessions"),
       ("/ui/jobs", "Jobs", "jobs.read", "jobs"), ("/ui/audit", "Audit log", "audit.read", "access"),
       ("/ui/users", "Users", "users.read", "access"))
CONFIG_KEY = "FLOWCTL_CONSOLE_PARTS"


@dataclass
class ConsoleParts:
    """The plane's parts the console shows; None where that role does not run here."""

    access: Any  # runtime.api.access.Access: users, sign-in throttle, audit log
    scheduler: Any = None  # runtime.scheduler.service.Scheduler
    hub: Any = None  # hub_store HubData (its .catalog)
    keys: Any = None  # runtime.gateway.service.KeyService
    sessions: Any = None  # runtime.sessions.manager.SessionManager
    jobs: Any = None  # runtime.jobs.plane_role.JobsRole
    _snapshot: tuple[float, dict[str, Any]] | None = field(default=None, init=False, repr=False)

    def status(self) -> dict[str, Any]:
        """The scheduler's status, at most SNAPSHOT_S old: every page and live feed shares one.

        Building it walks every node and replica (tens of ms for a thousand nodes), and each
        open tab's live feed asks once a second; one snapshot a second serves them all.
        Callers must not change it.
        """
        now = time.monotonic()
        if self._snapshot is None or now - self._snapshot[0] >= SNAPSHOT_S:
            self._snapshot = (now, self.scheduler.status())
        return self._snapshot[1]

    def changed(self) -> None:
        """After a change made here: the next page shows it, not the snapshot from before."""
        self._snapshot = None


class Denied(Exception):
    """A page or form the principal may not reach: rendered as an error page with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _when(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp)) + "Z"


def _mb(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1024:.1f} GiB" if value >= 1024 else f"{value} MiB"


ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
ENV.filters.update(age=_age, when=_when, mb=_mb, tojson_attr=lambda v: json.dumps(v))

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
}


def who() -> Principal:
    """The signed-in principal of this request; Denied(401) (a redirect to sign-in) when none."""
    principal = principal_of(request)
    if principal is None:
        raise Denied(401, "sign in first")
    return principal


def need(action: str, tenant: str | None = None) -> Principal:
    """The principal, when it may do `action` (on `tenant`'s object); else Denied 401/403/404."""
    principal = who()
    try:
        return authorize(principal, action, tenant)
    except ApiError as exc:
        raise Denied(exc.status, exc.detail) from None


def page(template: str, status: int = 200, **values: Any) -> Response:
    """A rendered page, with the principal, its CSRF token and the navigation it may use."""
    principal = principal_of(request)
    parts = current_app.config.get(CONFIG_KEY)
    nav = [(path, label) for path, label, action, part in NAV if principal is not None and allowed(principal, action)
           and (parts is None or getattr(parts, part) is not None)]
    html = ENV.get_template(template).render(
        principal=principal, csrf=csrf_token_for(principal) or "", nav=nav, path=request.path,
        can=lambda action: principal is not None and allowed(principal, action), **values)
    return Response(html, status, {"Content-Type": "text/html; charset=utf-8", **SECURITY_HEADERS})


def denied_page(exc: Denied) -> Response:
    """Sign-in for a request without a principal; else the error page."""
    if exc.status == 401:
        target = request.full_path.rstrip("?") if request.method == "GET" else PREFIX
        return Response("", 303, {"Location": f"{PREFIX}/signin?next={quote(target, safe='/')}", **SECURITY_HEADERS})
    return page("error.html", exc.status, title=f"{exc.status}", message=exc.message)


def done(location: str, notice: str = "") -> Response:
    """After a form: back to `location` (303), with a one-line notice shown there."""
    sep = "&" if "?" in location else "?"
    target = f"{location}{sep}notice={quote(notice)}" if notice else location
    return Response("", 303, {"Location": target, **SECURITY_HEADERS})


def register(app: Any, parts: ConsoleParts) -> None:
    """Add the console's routes to the plane's quart app."""
    from runtime.console import actions, jobs_pages, live, pages, signin

    app.config[CONFIG_KEY] = parts
    @app.errorhandler(Denied)
    async def console_denied(exc: Denied) -> Response:
        return denied_page(exc)

    pages.register(app, parts)
    actions.register(app, parts)
    jobs_pages.register(app, parts)
    live.register(app, parts)
    signin.register(app, parts)
