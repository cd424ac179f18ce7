"""One session WebSocket: utterances in, streamed replies out, cancel at any time.

Each utterance (a text, or audio transcribed first) gets an id; the reply
streams as `text` messages with a `delta`, then one `text` message with the
whole `content` (and `audio` when the session has a TTS model). `cancel` stops
the reply at once: the stream to the worker is reset, so generation stops
there too. Bad input gets an `error` message and the session stays usable.
"""

from __future__ import annotations

import base64
import uuid
from typing import Protocol

import trio

from runtime.sessions.backend import BackendError, ChatBackend
from runtime.sessions.manager import Session
from runtime.sessions.protocol import (
    AudioIn,
    CancelIn,
    MessageError,
    TextIn,
    parse_client,
    server_message,
)

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
CLOSE_NORMAL = 1000
CLOSE_TOO_BIG = 1009
CLOSE_SESSION_ENDED = 4000


class SessionSocket(Protocol):
    """What a conversation needs from a WebSocket (quart's or trio-websocket's, adapted)."""

    async def send(self, text: str) -> None: ...

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the client is gone."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


class _Conversation:
    """The per-connection state of one session socket."""

    def __init__(self, session: Session, socket: SessionSocket, backend: ChatBackend):
        self.session = session
        self.socket = socket
        self.backend = backend
        self.current: trio.CancelScope | None = None
        self._send_lock = trio.Lock()

    async def send(self, kind: str, utterance_id: str | None, **fields: object) -> None:
        async with self._send_lock:
            await self.socket.send(server_message(kind, utterance_id, **fields))

    async def utterance(self, message: TextIn | AudioIn, scope: trio.CancelScope) -> None:
        uid = uuid.uuid4().hex[:12]
        session = self.session
        parts: list[str] = []
        with scope:
            try:
                if isinstance(message, AudioIn):
                    text = await self.backend.transcribe(session, message.audio, message.format)
                    await self.send("transcription", uid, content=text, role="user")
                else:
                    text = message.content
                session.history.add("user", text)
                await self._reply(uid, parts)
            except BackendError as exc:
                if session.history.turns and session.history.turns[-1][0] == "user":
                    session.history.turns.pop()  # unanswered: the next utterance starts clean
                await self.send("error", uid, content=str(exc))
                return
            finally:
                self.current = None
        reply = "".join(parts)
        if scope.cancelled_caught:
            if reply:
                session.history.add("assistant", reply)
            await self.send("text", uid, content=reply, role="assistant", cancelled=True)
            return
        session.history.add("assistant", reply)
        session.touch()
        await self.send("text", uid, content=reply, role="assistant", done=True)
        if session.tts_model and reply:
            try:
                audio = await self.backend.speak(session, reply)
            except BackendError as exc:
                await self.send("error", uid, content=f"speech synthesis failed: {exc}")
                return
            await self.send("audio", uid, content=reply, role="assistant",
                            data=base64.b64encode(audio).decode())

    async def _reply(self, uid: str, parts: list[str]) -> None:
        # A replica that fails before the first token is retried once on another one.
        for attempt in (1, 2):
            try:
                async for delta in self.backend.stream_chat(self.session, self.session.history.messages()):
                    parts.append(delta)
                    await self.send("text", uid, delta=delta, role="assistant")
                return
            except BackendError as exc:
                if attempt == 2 or parts or not exc.before_output:
                    raise
                self.session.replica_id = None


async def serve_session(session: Session, socket: SessionSocket, backend: ChatBackend, *,
                        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
    """Serve one WebSocket of `session` until the client leaves or the session closes.

    Cancellation: stops the reply in progress (resetting the worker stream) and returns.
    """
    conversation = _Conversation(session, socket, backend)
    session.connections += 1
    session.touch()
    try:
        async with trio.open_nursery() as nursery:

            async def end_with_session() -> None:
                await session.closed.wait()
                await conversation.send("error", None, content=session.close_reason)
                await socket.close(CLOSE_SESSION_ENDED, session.close_reason[:120])
                nursery.cancel_scope.cancel()

            nursery.start_soon(end_with_session)
            while True:
                raw = await socket.receive()
                if raw is None:
                    break
                if len(raw) > max_message_bytes:
                    await socket.close(CLOSE_TOO_BIG, f"message over {max_message_bytes} bytes")
                    break
                session.touch()
                try:
                    message = parse_client(raw)
                except MessageError as exc:
                    await conversation.send("error", None, content=str(exc))
                    continue
                if isinstance(message, CancelIn):
                    if conversation.current is not None:
                        conversation.current.cancel()
                    continue
                if conversation.current is not None:
                    await conversation.send("error", None,
                                            content="a reply is still being generated; send cancel first")
                    continue
                # Busy from now on, so a second message right behind is refused and a
                # cancel arriving before the task runs still reaches it.
                conversation.current = trio.CancelScope()
                nursery.start_soon(conversation.utterance, message, conversation.current)
            nursery.cancel_scope.cancel()
    finally:
        session.connections -= 1
