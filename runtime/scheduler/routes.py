"""The control plane's cluster routes: node connections, handshake, deployments, join tokens.

    GET    /api/cluster/handshake            who listens here (flowctl up uses it to decide)
    WS     /api/cluster/connect              a node's control connection (join token or node credential)
    GET    /api/cluster/status               nodes, deployments, models           (admin)
    POST   /api/deployments                  deploy or upgrade                    (admin)
    PATCH  /api/deployments/{service_id}     scale                                (admin)
    DELETE /api/deployments/{service_id}     undeploy                             (admin)
    POST   /api/cluster/tokens               create a join token (shown once)     (admin)
    GET    /api/cluster/tokens               list join tokens                     (admin)
    DELETE /api/cluster/tokens/{token}       revoke by id or name, with its nodes (admin)
"""

from __future__ import annotations

import re
from typing import Any

import trio
from quart import Response, request, websocket

from packer.manifest import SERVICE_ID_PATTERN
from packer.semver import is_version
from runtime.api import bearer_ok, error_response, json_response
from runtime.api.guard import principal_of
from runtime.http.jsonbody import InvalidJson, decode_json
from runtime.scheduler.node_connection import authenticate, serve_node
from runtime.scheduler.placement import PlacementError
from runtime.scheduler.reconcile import TRACKS
from runtime.scheduler.service import (
    DeployConflict,
    DeployError,
    NotDeployed,
    Scheduler,
    UnknownService,
)
from runtime.scheduler.store import TokenError

HANDSHAKE_KIND = "flowctl-control-plane"
_SERVICE_ID = re.compile(SERVICE_ID_PATTERN)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_TOKEN_TTL_S = 10 * 365 * 86400


class QuartTransport:
    """quart's websocket object as a tunnel MessageTransport."""

    def __init__(self, ws: Any):
        self._ws = ws

    async def send_message(self, message: bytes | str) -> None:
        """Send one WebSocket message."""
        await self._ws.send(message)

    async def get_message(self) -> bytes | str:
        """Receive one WebSocket message."""
        return await self._ws.receive()


def register(app: Any, scheduler: Scheduler, *, admin_key_hash: str, version: str,
             roles: tuple[str, ...]) -> None:
    """Attach the cluster routes to a quart-trio app."""

    def admin() -> Response | None:
        # A principal here was already checked against this route's action by the plane's guard.
        if principal_of(request) is not None or bearer_ok(request.headers.get("Authorization"), admin_key_hash):
            return None
        return error_response(401, "this needs the control plane's admin key (--token / FLOWCTL_TOKEN)",
                              {"WWW-Authenticate": "Bearer"})

    async def body() -> dict[str, Any]:
        # get_data: capped by MAX_CONTENT_LENGTH (413) and quart's BODY_TIMEOUT (408); all three
        # arguments given, as quart types only that form as bytes.
        try:
            data = decode_json(await request.get_data(cache=False, as_text=False, parse_form_data=False))
        except InvalidJson as exc:
            raise DeployError(str(exc)) from None
        if not isinstance(data, dict):
            raise DeployError("the request body must be a JSON object")
        return data

    @app.get("/api/cluster/handshake")
    async def handshake() -> Response:
        cluster_id = await trio.to_thread.run_sync(scheduler.store.cluster_id)
        return json_response({"kind": HANDSHAKE_KIND, "cluster_id": cluster_id, "version": version,
                              "roles": list(roles)})

    @app.websocket("/api/cluster/connect")
    async def connect() -> Response | None:
        try:
            auth = await authenticate(scheduler, websocket.headers.get("Authorization"))
        except TokenError as exc:
            # Refused before the upgrade completes: the node sees an HTTP 401, not a closed socket.
            return error_response(401, str(exc))
        await websocket.accept()
        peer = websocket.remote_addr or "?"
        await serve_node(scheduler, QuartTransport(websocket), auth=auth, peer=str(peer))
        return None

    @app.get("/api/cluster/status")
    async def status() -> Response:
        return admin() or json_response(scheduler.status())

    @app.post("/api/deployments")
    async def deploy() -> Response:
        if (refused := admin()) is not None:
            return refused
        data = await body()
        service_id = _field(data, "service", str)
        if not _SERVICE_ID.match(service_id):
            raise DeployError(f"service {service_id!r} is not a valid service id")
        version = data.get("version") or "latest"
        if not isinstance(version, str) or not (version == "latest" or is_version(version)):
            raise DeployError(f"version {version!r} is not SemVer or 'latest'")
        replicas = data.get("replicas")  # absent: keep an existing deployment's count (new: 1)
        if replicas is not None and (isinstance(replicas, bool) or not isinstance(replicas, int)):
            raise DeployError(f"replicas {replicas!r} is not an integer")
        nodes = data.get("nodes")  # absent (or null): keep an existing deployment's pin; []: anywhere
        if nodes is not None and (not isinstance(nodes, list)
                                  or not all(isinstance(n, str) and _NAME.match(n) for n in nodes)):
            raise DeployError("nodes must be a list of node names")
        track = data.get("track")  # absent (or null): keep the channel unless a version is named; "": pin
        if track is not None and track not in ("", *TRACKS):
            raise DeployError(f"track {track!r} must be one of: {', '.join(TRACKS)} (or \"\" to pin)")
        if track and version != "latest":
            raise DeployError(f"give a version ({version}) or a track ({track}), not both: "
                              "a tracked deployment runs its channel's newest version")
        dep = await scheduler.deploy(service_id, version, replicas=replicas,
                                     nodes=None if nodes is None else tuple(nodes), track=track)
        return json_response(_deployment_json(dep), 201)

    @app.patch("/api/deployments/<service_id>")
    async def scale(service_id: str) -> Response:
        if (refused := admin()) is not None:
            return refused
        replicas = (await body()).get("replicas")
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise DeployError(f"replicas {replicas!r} is not an integer")
        return json_response(_deployment_json(await scheduler.scale(service_id, replicas)))

    @app.delete("/api/deployments/<service_id>")
    async def undeploy(service_id: str) -> Response:
        if (refused := admin()) is not None:
            return refused
        await scheduler.undeploy(service_id)
        return Response("", status=204)

    @app.post("/api/cluster/tokens")
    async def create_token() -> Response:
        if (refused := admin()) is not None:
            return refused
        data = await body()
        name = _field(data, "name", str)
        if not _NAME.match(name):
            raise DeployError(f"token name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        ttl = data.get("ttl_s")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)
                                or not 0 < ttl <= MAX_TOKEN_TTL_S):
            raise DeployError(f"ttl_s {ttl!r} must be a positive number of seconds")
        record, token = await trio.to_thread.run_sync(
            lambda: scheduler.store.create_token(name, ttl_s=ttl))
        return json_response({"token_id": record.token_id, "name": name, "token": token,
                              "expires_at": record.expires_at}, 201)

    @app.get("/api/cluster/tokens")
    async def list_tokens() -> Response:
        if (refused := admin()) is not None:
            return refused
        tokens = await trio.to_thread.run_sync(scheduler.store.tokens)
        enrolled = await trio.to_thread.run_sync(scheduler.store.enrolled_nodes)
        return json_response([{"token_id": t.token_id, "name": t.name, "created_at": t.created_at,
                               "expires_at": t.expires_at, "revoked": t.revoked_at is not None,
                               "active": t.active, "nodes": enrolled.get(t.token_id, [])} for t in tokens])

    @app.delete("/api/cluster/tokens/<token>")
    async def revoke_token(token: str) -> Response:
        if (refused := admin()) is not None:
            return refused
        if not await scheduler.revoke_token(token):
            return error_response(404, f"no active join token {token!r}")
        return Response("", status=204)

    @app.errorhandler(DeployError)
    async def deploy_error(exc: DeployError) -> Response:
        status = 404 if isinstance(exc, NotDeployed | UnknownService) else \
            409 if isinstance(exc, DeployConflict) else 400
        return error_response(status, str(exc))

    @app.errorhandler(PlacementError)
    async def placement_error(exc: PlacementError) -> Response:
        return error_response(409, str(exc))


def _field(data: dict[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if not isinstance(value, kind):
        raise DeployError(f"field {name!r} is required and must be a {kind.__name__}")
    return value


def _deployment_json(dep: Any) -> dict[str, Any]:
    return {"service": dep.service_id, "version": dep.version, "replicas": dep.replicas,
            "models": list(dep.models), "nodes": list(dep.nodes), "track": dep.track or None, "port": dep.port}
