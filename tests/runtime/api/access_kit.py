"""A real plane on 127.0.0.1 with users of each role, for the access tests."""

from functools import partial

import httpx

from runtime.plane import PlaneSettings, serve_control_plane

ADMIN = "access-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
PASSWORD = "correct horse battery"
ROLE_USERS = {"admin": ("root", None), "operator": ("olga", None), "viewer": ("vic", None),
              "tenant-admin": ("tara", "acme"), "tenant-viewer": ("tim", "acme")}


async def start_plane(nursery, tmp_path, **extra):
    """(handle, client) of a plane with every role; `extra` is PlaneSettings.extra."""
    settings = PlaneSettings(data_dir=tmp_path / "plane", port=0, heartbeat_interval=0.2, extra=extra)
    handle = await nursery.start(partial(serve_control_plane, settings, admin_key=ADMIN))
    return handle, httpx.AsyncClient(base_url=handle.url, timeout=30)


async def make_user(client, name, role, tenant=None, password=PASSWORD):
    """Create a user with the admin key; the reply's JSON."""
    body = {"name": name, "role": role, "password": password, **({"tenant": tenant} if tenant else {})}
    reply = await client.post("/api/v1/users", headers=AUTH, json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()


async def make_token(client, user, **body):
    """A new personal access token of `user` (made with the admin key)."""
    reply = await client.post(f"/api/v1/users/{user}/tokens", headers=AUTH, json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()["token"]


async def signin(client, name, password=PASSWORD, **kwargs):
    """POST /api/v1/auth/signin; (reply, session id or None). The client's cookie jar stays empty."""
    reply = await client.post("/api/v1/auth/signin", json={"name": name, "password": password}, **kwargs)
    client.cookies.clear()
    cookie = reply.headers.get("set-cookie", "")
    session = cookie.split(";")[0].partition("=")[2] if cookie.startswith("flowctl_session=") else None
    return reply, session


def cookie(session):
    """The Cookie header of a session id."""
    return {"Cookie": f"flowctl_session={session}"}
