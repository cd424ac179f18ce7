"""The session API and WebSocket routes (seed 002's management API, behind the gateway's keys).

    POST   /v1/sessions            create (also /mgmt/v1/sessions, the seed's path)   -> 201
    GET    /v1/sessions            the caller's tenant's sessions (every tenant's with the admin key)
    GET    /v1/sessions/{id}       one session (404 for another tenant's, as for a missing one)
    DELETE /v1/sessions/{id}       close it                                           -> 204
    WS     /ws/sessions/{id}?token=ENGINE_TOKEN   (also /ws/ws/{id}, the seed's path)
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import trio
from quart import Response, jsonify, request, websocket

from runtime.api.guard import principal_of
from runtime.exception_groups import boundary, describe
from runtime.gateway.errors import GatewayError
from runtime.scheduler.service import Scheduler
from runtime.sessions.backend import ChatBackend
from runtime.sessions.conversation import serve_session
from runtime.sessions.engine_url import FORWARDED_HEADERS, EngineUrls
from runtime.sessions.manager import SessionError, SessionManager


class Caller(Protocol):
    """Who calls the session API (the gateway's Principal): a session belongs to its tenant and key."""

    @property
    def tenant(self) -> str: ...

    @property
    def key_id(self) -> str: ...


# Returns the caller of an Authorization header, or raises SessionError(401/403).
Authenticator = Callable[[str | None], Awaitable[Caller]]
Admit = Callable[[Any], Awaitable[None]]
# Whether an Authorization header carries the plane's admin key.
IsAdmin = Callable[[str | None], bool]


def _max_sessions(who: Any) -> int | None:
    """The tenant's own cap on open sessions, when its key carries one."""
    limits = getattr(who, "tenant_limits", None)
    return getattr(limits, "max_sessions", None)

_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_VOICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_REPLY_TOKENS = 32_768
log = logging.getLogger("flowctl.sessions")
_SEED_FIELDS = ("tutor_id", "student_id", "kb_id")
MAX_SYSTEM_PROMPT = 32_000
MAX_METADATA_BYTES = 16_384


class QuartSocket:
    """quart's websocket as a SessionSocket."""

    async def send(self, text: str) -> None:
        """Send one text message."""
        await websocket.send(text)

    async def receive(self) -> str | bytes | None:
        """The next message (quart cancels the handler when the client leaves)."""
        return await websocket.receive()

    async def close(self, code: int, reason: str) -> None:
        """Close with a code and reason."""
        await websocket.close(code, reason)


def _error(status: int, detail: str) -> Response:
    response = jsonify({"detail": detail, "error": {"message": detail, "type": "session_error",
                                                    "code": status}})
    response.status_code = status
    return response


def _json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise SessionError(400, "the request body is not valid JSON") from None
    except RecursionError:
        raise SessionError(400, "the request body is nested too deeply") from None


def _session_request(data: Any, scheduler: Scheduler, default_model: str | None = None,
                     tutors: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Any]:
    """Validate a create body; the seed's top-level tutor_id/student_id/kb_id join metadata.

    The pipeline (model, asr_model, tts_model, voice, system_prompt) is the body's, field by
    field, else the tutor's in the plane's tutor table when the body names a tutor; a body
    without a model gets `default_model`, else the only ready model.
    """
    if not isinstance(data, dict):
        raise SessionError(400, "the request body must be a JSON object")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise SessionError(400, "metadata must be a JSON object")
    for key in _SEED_FIELDS:
        if key in data:
            metadata.setdefault(key, data[key])
    if len(repr(metadata)) > MAX_METADATA_BYTES:
        raise SessionError(413, f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    tutor = _tutor(data, metadata, tutors or {})
    model = data.get("model", tutor.get("model", default_model))
    if model is None:
        ready = sorted(scheduler.models())
        if len(ready) != 1:
            raise SessionError(400, f"\"model\" is required (ready models: {', '.join(ready) or 'none'}); "
                                    "or start the plane with --default-model MODEL")
        model = ready[0]
    fields: dict[str, Any] = {"model": model}
    for key in ("asr_model", "tts_model", "voice"):
        fields[key] = data.get(key, tutor.get(key))
    for key in ("model", "asr_model", "tts_model"):
        value = fields[key]
        if value is not None and (not isinstance(value, str) or not _MODEL.match(value)):
            raise SessionError(400, f"{key} {value!r} is not a model id")
    voice = fields["voice"]
    if voice is not None and (not isinstance(voice, str) or not _VOICE.match(voice)):
        raise SessionError(400, f"voice {voice!r} is not a voice name (letters, digits, ._-)")
    if voice is not None and fields["tts_model"] is None:
        raise SessionError(400, "a voice needs a tts_model to speak it")
    system_prompt = data.get("system_prompt", tutor.get("system_prompt", ""))
    if not isinstance(system_prompt, str) or len(system_prompt) > MAX_SYSTEM_PROMPT:
        raise SessionError(400, f"system_prompt must be a string of at most {MAX_SYSTEM_PROMPT} characters")
    stream = data.get("stream", True)
    if not isinstance(stream, bool):
        raise SessionError(400, f"stream must be true or false, not {stream!r}")
    max_tokens = data.get("max_tokens")
    if max_tokens is not None and (type(max_tokens) is not int or not 1 <= max_tokens <= MAX_REPLY_TOKENS):
        raise SessionError(400, f"max_tokens must be a whole number from 1 to {MAX_REPLY_TOKENS}")
    whose = f"tutor {metadata['tutor_id']}'s " if tutor else ""
    if not scheduler.routes(model):  # nothing works without the LLM
        raise SessionError(400 if tutor else 404, f"no ready replica serves {whose}model {model!r}")
    # A speech model not ready (still starting, or not deployed) does not stop a session: text
    # works, and each audio turn gets an `error` saying what is missing until it is there.
    warnings = [f"no ready replica serves {whose}{key} {fields[key]!r} now: "
                f"{'audio messages' if key == 'asr_model' else 'spoken replies'} get an error until one does"
                for key in ("asr_model", "tts_model") if fields[key] is not None and not scheduler.routes(fields[key])]
    return {**fields, "system_prompt": system_prompt, "metadata": metadata, "stream": stream,
            "max_tokens": max_tokens, "warnings": warnings}


def _tutor(data: dict[str, Any], metadata: dict[str, Any], tutors: Mapping[str, Mapping[str, str]]
           ) -> Mapping[str, str]:
    """The pipeline of the body's tutor in the tutor table; {} without a table or a tutor.

    An unknown tutor is a 400 unless the body names its own model.
    """
    tutor_id = metadata.get("tutor_id")
    if not tutors or tutor_id is None or isinstance(tutor_id, dict | list):
        return {}
    pipeline = tutors.get(str(tutor_id))
    if pipeline is None and "model" not in data:
        known = ", ".join(sorted(tutors)[:20])
        raise SessionError(400, f"unknown tutor_id {tutor_id!r}: the plane's tutor table has {known}")
    return pipeline or {}


def register(app: Any, manager: SessionManager, backend: ChatBackend, scheduler: Scheduler, *,
             authenticate: Authenticator, admit: Admit | None = None, default_model: str | None = None,
             is_admin: IsAdmin | None = None, engine_urls: EngineUrls | None = None,
             tutors: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """Attach the session routes to a quart-trio app.

    `tutors` is the plane's tutor table: tutor_id -> pipeline (model, asr_model, tts_model,
    voice, system_prompt), for create bodies that name a tutor and not its models.

    `default_model` serves create bodies that name none; with `is_admin`, the admin key lists
    every tenant's sessions (seed 002's debug listing); `engine_urls` decides the engine_url
    handed out (a public URL, trusted proxies' X-Forwarded-*; runtime/sessions/engine_url.py).
    """
    urls = engine_urls or EngineUrls()

    async def caller() -> Caller:
        return await authenticate(request.headers.get("Authorization"))

    async def tenant(session_id: str | None = None) -> str:
        who = principal_of(request)  # a user the plane's guard let through (its role was checked there)
        if who is not None and who.tenant is not None:
            return who.tenant
        if who is not None and session_id is not None:
            for session in manager.list_all():
                if session.session_id == session_id:
                    return session.tenant
            raise SessionError(404, f"no session {session_id!r}")
        return (await caller()).tenant

    def engine_url(session_id: str) -> str:
        # Repeated headers joined: the last value is the nearest proxy's, however it added it.
        forwarded = {name: ",".join(request.headers.getlist(name)) for name in FORWARDED_HEADERS}
        return urls.url(session_id, scheme=request.scheme, host=request.host, peer=request.remote_addr,
                        headers=forwarded)

    async def create() -> Response:
        await caller()  # no body is read for a caller without a valid key
        raw = await request.get_data(cache=True, as_text=False, parse_form_data=False)  # quart types this form as bytes
        fields = _session_request(_json_body(raw), scheduler, default_model, tutors)
        warnings = fields.pop("warnings")
        who = await caller()  # again: the key may have been revoked while the body arrived
        if admit is not None:
            try:
                await admit(who)  # opening a session counts against the key's request rate
            except GatewayError as exc:
                raise SessionError(exc.status, exc.message) from None
        session = manager.create(who.tenant, **fields, key_id=who.key_id, principal=who,
                                 tenant_limit=_max_sessions(who))
        if session.persist is not None:
            await session.persist()  # before its token is handed out: any plane can resume it from now on
        body = session.to_json(engine_url=engine_url(session.session_id), secret=True)
        if warnings:
            body["warnings"] = warnings
        response = jsonify(body)
        response.status_code = 201
        return response

    async def list_sessions() -> Response:
        who = principal_of(request)
        if (who is not None and who.tenant is None) or (
                is_admin is not None and is_admin(request.headers.get("Authorization"))):
            data = [{**s.to_json(), "tenant": s.tenant} for s in manager.list_all()]
        else:
            data = [s.to_json() for s in manager.list(await tenant())]
        return jsonify({"object": "list", "data": data,
                        "active_sessions": manager.active, "max_sessions": manager.max_sessions})

    async def get_session(session_id: str) -> Response:
        owner = await tenant(session_id)
        try:
            return jsonify(manager.get(session_id, owner).to_json())
        except SessionError:
            if (stored := await _stored(session_id, owner)) is None:
                raise
            return jsonify(stored)  # begun on another plane: as the shared state has it

    async def delete_session(session_id: str) -> Response:
        owner = await tenant(session_id)
        try:
            manager.delete(session_id, owner)
        except SessionError:
            if await _stored(session_id, owner) is None:
                raise
            assert manager.store is not None
            await trio.to_thread.run_sync(manager.store.delete, session_id)
        await manager.forget_stored()
        return Response("", status=204)

    async def _stored(session_id: str, owner: str) -> dict[str, Any] | None:
        """A session of `owner` that another plane began (several planes), as the API shows it; else None."""
        if manager.store is None:
            return None
        found = await trio.to_thread.run_sync(manager.store.find, session_id)
        if found is None or found.tenant != owner or found.idle_s >= manager.idle_timeout:
            return None
        return {"session_id": found.session_id, "status": "active", "model": found.model, **found.config,
                "created_at": found.created_at, "history_tokens": found.history.tokens()}

    for prefix in ("/v1/sessions", "/mgmt/v1/sessions"):
        name = prefix.strip("/").replace("/", "_")
        app.add_url_rule(prefix, f"{name}_create", create, methods=["POST"])
        app.add_url_rule(prefix, f"{name}_list", list_sessions, methods=["GET"])
        app.add_url_rule(f"{prefix}/<session_id>", f"{name}_get", get_session, methods=["GET"])
        app.add_url_rule(f"{prefix}/<session_id>", f"{name}_delete", delete_session, methods=["DELETE"])

    async def connect(session_id: str) -> Response | None:
        token = websocket.args.get("token")
        # Begun on another plane (several planes on one state): resumed from the shared state.
        session = manager.authenticate(session_id, token) or await manager.resume(session_id, token)
        if session is None:
            # Refused before the upgrade completes; the same answer for a wrong id or token.
            return _error(403, "unknown session or wrong engine token")
        if session.connections >= manager.max_sockets:
            return _error(429, f"this session already has {manager.max_sockets} WebSockets open, "
                               "the most it may have; close one first")
        # Counted before the first await, so sockets racing in cannot pass the cap together.
        session.connections += 1
        try:
            # One socket's failure, whatever it is, ends only that socket.
            with boundary(lambda exc: log.warning("session %s: socket failed: %s", session_id, describe(exc))):
                await websocket.accept()
                await serve_session(session, QuartSocket(), backend)
        finally:
            session.connections -= 1
        return None

    app.add_websocket("/ws/sessions/<session_id>", "session_socket", connect)
    app.add_websocket("/ws/ws/<session_id>", "session_socket_seed", connect)

    @app.errorhandler(SessionError)
    async def session_error(exc: SessionError) -> Response:
        return _error(exc.status, exc.detail)
