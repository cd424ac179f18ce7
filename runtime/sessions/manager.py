"""Realtime sessions: creation under limits, lookup by tenant or engine token, idle expiry.

Sessions live in memory on the gateway that created them (a session is a live
conversation, not a record); each belongs to the tenant of the key that made it,
and no call reveals one tenant's session to another (a foreign id is a 404).
With several planes on one state a `SessionStore` also keeps each session's configuration,
history and token digest (runtime/sessions/store.py): a client reconnecting to another plane
with the session's id and token resumes it there (`resume`).
"""

from __future__ import annotations

import builtins
import dataclasses
import hmac
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from runtime.errors import FlowError
from runtime.sessions.group import UtteranceGroup
from runtime.sessions.history import DEFAULT_MAX_TOKENS, History
from runtime.sessions.protocol import now_iso
from runtime.sessions.store import SessionStore

log = logging.getLogger("flowctl.sessions")
PrincipalOf = Callable[[str | None, str], Awaitable[Any]]  # (key id, tenant) -> that key's principal, or None

DEFAULT_MAX_SESSIONS = 1000
DEFAULT_IDLE_TIMEOUT = 3600.0
DEFAULT_MAX_SOCKETS = 4  # WebSockets open on one session at once
MAX_REAP_INTERVAL = 30.0


class SessionError(FlowError):
    """A session request cannot be served; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str):
        self.status = status
        self.detail = detail
        super().__init__(detail)


@dataclass(eq=False)
class Session:
    """One live conversation; its state lives here and nowhere else."""

    session_id: str
    tenant: str
    model: str
    token: str
    history: History
    key_id: str | None = None  # the API key that opened it: revoking the key closes it
    principal: Any = None  # that key as the dispatcher sees it: its limits apply to every utterance
    group: UtteranceGroup = field(default_factory=UtteranceGroup)  # the replica of each pipeline stage
    asr_model: str | None = None
    tts_model: str | None = None
    voice: str | None = None  # the TTS voice (the model's default when None)
    stream: bool = True  # text_delta messages, and audio sentence by sentence while the LLM generates
    max_tokens: int | None = None  # the reply's length limit (the model's default when None)
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=now_iso)
    last_activity_at: str = field(default_factory=now_iso)
    last_activity: float = field(default_factory=trio.current_time)
    close_reason: str = ""
    closed: trio.Event = field(default_factory=trio.Event)
    connections: int = 0
    reply: trio.CancelScope | None = None  # the reply being generated, whichever socket asked
    slot_held: bool = False  # the turn in progress holds a concurrency slot of the key for its calls
    persist: Callable[[], Awaitable[None]] | None = None  # writes it to the shared state (several planes)

    @property
    def models(self) -> dict[str, str]:
        """The pipeline: each stage (asr, llm, tts) the session has, and its model."""
        stages = {"asr": self.asr_model, "llm": self.model, "tts": self.tts_model}
        return {stage: model for stage, model in stages.items() if model}

    @property
    def replica_id(self) -> str | None:
        """The LLM's replica (the session API's `replica_id`)."""
        pin = self.group.pins.get("llm")
        return pin.replica_id if pin is not None else None

    @property
    def node_id(self) -> str | None:
        """The LLM replica's node."""
        pin = self.group.pins.get("llm")
        return pin.node_id if pin is not None else None

    @property
    def status(self) -> str:
        """"active" until deleted or expired, then "closed"."""
        return "closed" if self.closed.is_set() else "active"

    def touch(self) -> None:
        """Record activity (postpones the idle timeout)."""
        self.last_activity = trio.current_time()
        self.last_activity_at = now_iso()

    def close(self, reason: str) -> None:
        """End the session; its WebSocket is told why and closed."""
        if not self.closed.is_set():
            self.close_reason = reason
            self.closed.set()
            if self.reply is not None:
                self.reply.cancel()  # every stage of the utterance in progress stops now

    def to_json(self, *, engine_url: str | None = None, secret: bool = False) -> dict[str, Any]:
        """The session as the API shows it (the engine token only at creation)."""
        data: dict[str, Any] = {
            "session_id": self.session_id, "status": self.status, "model": self.model,
            "asr_model": self.asr_model, "tts_model": self.tts_model, "voice": self.voice,
            "stream": self.stream, "pipeline": self.group.to_json(self.models), "metadata": self.metadata,
            "created_at": self.created_at, "last_activity": self.last_activity_at,
            "node_id": self.node_id, "replica_id": self.replica_id,
            "history_tokens": self.history.tokens(),
        }
        # The seed's clients read these at the top level.
        for key in ("tutor_id", "student_id", "kb_id"):
            data[key] = self.metadata.get(key)
        if engine_url is not None:
            data["engine_url"] = engine_url
        if secret:
            data["engine_token"] = self.token
        return data


class SessionManager:
    """The sessions of one gateway, with global and per-tenant limits and idle expiry."""

    def __init__(self, *, max_sessions: int = DEFAULT_MAX_SESSIONS, max_per_tenant: int | None = None,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, history_tokens: int = DEFAULT_MAX_TOKENS,
                 max_sockets: int = DEFAULT_MAX_SOCKETS, store: SessionStore | None = None,
                 principal_of: PrincipalOf | None = None):
        self.max_sessions = max_sessions
        self.max_sockets = max_sockets
        self.max_per_tenant = max_per_tenant
        self.idle_timeout = idle_timeout
        self.history_tokens = history_tokens
        self._sessions: dict[str, Session] = {}
        self.store, self._principal_of = store, principal_of
        self._unstored: list[str] = []  # closed here: their rows go at the reaper's next round

    @property
    def active(self) -> int:
        """Sessions currently open."""
        return len(self._sessions)

    def create(self, tenant: str, model: str, *, system_prompt: str = "", asr_model: str | None = None,
               tts_model: str | None = None, voice: str | None = None, stream: bool = True,
               max_tokens: int | None = None, metadata: dict[str, Any] | None = None,
               tenant_limit: int | None = None, key_id: str | None = None, principal: Any = None) -> Session:
        """Open a session; SessionError 503 when the gateway is full, 429 when the tenant is."""
        if len(self._sessions) >= self.max_sessions:
            raise SessionError(503, f"maximum number of sessions ({self.max_sessions}) reached; "
                                    "close one or try later")
        limit = tenant_limit if tenant_limit is not None else self.max_per_tenant
        if limit is not None and sum(1 for s in self._sessions.values() if s.tenant == tenant) >= limit:
            raise SessionError(429, f"this tenant already has its maximum of {limit} sessions open")
        session = Session(session_id=str(uuid.uuid4()), tenant=tenant, model=model,
                          token=secrets.token_urlsafe(32),
                          history=History(system_prompt=system_prompt, max_tokens=self.history_tokens),
                          asr_model=asr_model, tts_model=tts_model, voice=voice, stream=stream,
                          max_tokens=max_tokens, metadata=dict(metadata or {}),
                          key_id=key_id, principal=principal)
        self._keep(session)
        return session

    def _keep(self, session: Session) -> None:
        self._sessions[session.session_id] = session
        if self.store is not None:
            session.persist = lambda: self._persist(session)

    async def _persist(self, session: Session) -> None:
        """Write the session to the shared state; a failure is logged (the conversation goes on here)."""
        assert self.store is not None
        try:
            await trio.to_thread.run_sync(self.store.save, session)
        except Exception as exc:  # the database is down: this plane still serves the session
            log.warning("session %s: could not be saved to the shared state: %s", session.session_id, exc)

    async def resume(self, session_id: str, token: str | None) -> Session | None:
        """A session another plane began, from the shared state, if `token` is its engine token; else None.

        Refused (None) when it has been idle past the timeout or its key no longer serves.
        Error handling: SessionError 503 when this gateway is full.
        """
        if self.store is None or not token:
            return None
        found = await trio.to_thread.run_sync(self.store.load, session_id, token)
        if found is None:
            return None
        if found.idle_s >= self.idle_timeout:
            await trio.to_thread.run_sync(self.store.delete, session_id)
            return None
        if (here := self._sessions.get(session_id)) is not None:
            return here  # resumed meanwhile by another socket
        who = await self._principal_of(found.key_id, found.tenant) if self._principal_of is not None else None
        if who is None:
            return None
        if len(self._sessions) >= self.max_sessions:
            raise SessionError(503, f"maximum number of sessions ({self.max_sessions}) reached; "
                                    "close one or try later")
        session = Session(session_id=found.session_id, tenant=found.tenant, model=found.model, token=token,
                          history=found.history, key_id=found.key_id, principal=who, created_at=found.created_at,
                          **found.config)
        self._keep(session)
        log.info("session %s resumed from the shared state (%d turns)", session_id, len(found.history.turns))
        return session

    async def forget_stored(self) -> None:
        """Drop the rows of the sessions closed here since the last call."""
        gone, self._unstored = self._unstored, []
        store = self.store
        if store is None:
            return
        for session_id in gone:
            try:
                await trio.to_thread.run_sync(store.delete, session_id)
            except Exception as exc:
                log.warning("session %s: could not be removed from the shared state: %s", session_id, exc)

    def get(self, session_id: str, tenant: str) -> Session:
        """The tenant's session; SessionError 404 for a missing one and for another tenant's."""
        session = self._sessions.get(session_id)
        if session is None or session.tenant != tenant:
            raise SessionError(404, f"no session {session_id!r}")
        return session

    def list_all(self) -> list[Session]:
        """Every tenant's open sessions, oldest first."""
        return list(self._sessions.values())

    def list(self, tenant: str) -> list[Session]:
        """The tenant's open sessions, oldest first."""
        return [s for s in self._sessions.values() if s.tenant == tenant]

    def delete(self, session_id: str, tenant: str, *, reason: str = "session deleted") -> None:
        """Close and forget a session."""
        session = self.get(session_id, tenant)
        self._forget(session, reason)

    def authenticate(self, session_id: str, token: str | None) -> Session | None:
        """The session whose engine token is `token`, compared in constant time, else None."""
        session = self._sessions.get(session_id)
        expected = session.token if session is not None else secrets.token_urlsafe(32)
        if not token or not hmac.compare_digest(expected.encode(), token.encode()) or session is None:
            return None
        return session

    def close_revoked(self, key_ids: Iterable[str], tenant: str | None = None) -> None:
        """Close the sessions opened with a revoked key, and every session of a removed tenant."""
        revoked = set(key_ids)
        gone = [s for s in self._sessions.values() if s.key_id in revoked or s.tenant == tenant]
        for session in gone:
            self._forget(session, f"tenant {tenant!r} was removed" if session.tenant == tenant
                         else f"the API key {session.key_id} that opened this session was revoked")

    def retune(self, tenant: str, limits: Any) -> None:
        """The tenant's limits changed: its open sessions' calls are held to the new ones from now on."""
        for session in self._sessions.values():
            if session.tenant == tenant and session.principal is not None:
                session.principal = dataclasses.replace(session.principal, tenant_limits=limits)

    def expire_idle(self) -> builtins.list[Session]:  # `list` here is the method above
        """Close sessions idle longer than the timeout; returns them."""
        now = trio.current_time()
        idle = [s for s in self._sessions.values() if now - s.last_activity >= self.idle_timeout]
        for session in idle:
            self._forget(session, f"session closed after {self.idle_timeout:g} s without activity")
        return idle

    async def run_reaper(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Expire idle sessions until cancelled."""
        task_status.started()
        interval = min(self.idle_timeout / 4, MAX_REAP_INTERVAL)
        while True:
            await trio.sleep(interval)
            self.expire_idle()
            await self.forget_stored()

    def close_all(self, reason: str) -> None:
        """Close every session (the gateway is stopping)."""
        for session in list(self._sessions.values()):
            self._forget(session, reason)

    def _forget(self, session: Session, reason: str) -> None:
        session.close(reason)
        self._sessions.pop(session.session_id, None)
        if self.store is not None:
            self._unstored.append(session.session_id)
