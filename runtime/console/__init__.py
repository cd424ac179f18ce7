"""The web console at /ui: server-rendered pages over the plane's own in-process state.

`register(app, parts)` adds the pages (runtime/console/pages.py), the forms that change
state (actions.py) and the live SSE feeds (live.py) to the plane's quart app. Who may see
and do what comes from the access guard (runtime/api/guard.py) in front of the app; every
form carries the session's CSRF token, which the guard checks.
"""

from __future__ import annotations

from runtime.console.context import ConsoleParts, register

__all__ = ["ConsoleParts", "register"]
