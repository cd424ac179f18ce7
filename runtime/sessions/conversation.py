"""One session WebSocket: utterances in, streamed replies out, cancel at any time.

Each utterance (a text, or audio transcribed first: a `transcription` message) gets
an id; the reply streams as `text_delta` messages (seed 002's clients ignore them),
then one `text` message with the whole `content`, as the seed sends it. With a TTS
model, `audio` messages speak the reply sentence by sentence, the first while the
LLM is still generating (the whole reply at once when the session does not stream).
`cancel` stops
the reply at once: the stream to the worker is reset, so generation stops
there too. A session answers one utterance at a time, whichever of its sockets
sent it. Bad input and failed replies get an `error` message and the session
stays usable.
"""

from __future__ import annotations

import base64
import logging
import math
import uuid
from typing import Protocol

import trio

from runtime.exception_groups import describe, split_cancelled
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
from runtime.sessions.sentences import SentenceSplitter
from runtime.sessions.wav import wav_info

log = logging.getLogger("flowctl.sessions")
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
        self._send_lock = trio.Lock()

    async def send(self, kind: str, utterance_id: str | None, **fields: object) -> None:
        async with self._send_lock:
            await self.socket.send(server_message(kind, utterance_id, **fields))

    async def handle(self, raw: str | bytes, nursery: trio.Nursery) -> None:
        """Act on one client message; an utterance's reply runs as a task in `nursery`."""
        try:
            message = parse_client(raw)
        except MessageError as exc:
            await self.send("error", None, content=str(exc))
            return
        session = self.session
        if isinstance(message, CancelIn):
            if session.reply is not None:
                session.reply.cancel()
            return
        if session.reply is not None:
            await self.send("error", None, content="a reply is still being generated; send cancel first")
            return
        # Busy from now on, for every socket of the session, so a second message right
        # behind is refused and a cancel arriving before the task runs still reaches it.
        session.reply = trio.CancelScope()
        nursery.start_soon(self.utterance, message, session.reply)

    async def utterance(self, message: TextIn | AudioIn, scope: trio.CancelScope) -> None:
        """Answer one utterance; the session is busy until its reply is complete.

        Error handling: a failure of any type (a group included) ends only this
        utterance: it is logged in one line and the client gets an `error`.
        """
        uid = uuid.uuid4().hex[:12]
        try:
            await self._answer(uid, message, scope)
        except BaseException as exc:
            travel, errors = split_cancelled(exc)
            if errors is None:
                raise
            log.warning("session %s: utterance %s failed: %s", self.session.session_id, uid, describe(errors))
            self._forget_question()
            if travel is not None:
                raise travel from None
            await self.send("error", uid, content="the reply failed on the gateway; try again")
        finally:
            if self.session.reply is scope:
                self.session.reply = None

    def _forget_question(self) -> None:
        turns = self.session.history.turns
        if turns and turns[-1][0] == "user":
            turns.pop()  # unanswered: the next utterance starts clean

    async def _answer(self, uid: str, message: TextIn | AudioIn, scope: trio.CancelScope) -> None:
        session = self.session
        parts: list[str] = []
        answered = False
        with scope:
            try:
                # One concurrency slot of the key for the whole turn: ASR, LLM and TTS (which runs
                # beside the LLM) share it, so a key allowed one request at a time can still talk.
                async with self.backend.turn(session):
                    if isinstance(message, AudioIn):
                        text = (await self.backend.transcribe(session, message.audio, message.format)).strip()
                        if not text:
                            raise BackendError("no speech was heard in the audio", code="no_speech")
                        await self.send("transcription", uid, content=text, role="user")
                    else:
                        text = message.content
                    session.history.add("user", text)
                    failure: BackendError | None = None
                    # The reply's sentences are spoken while the LLM goes on: the speaker runs beside it.
                    async with trio.open_nursery() as speaking:
                        speaker = Speaker(self, uid) if session.tts_model else None
                        if speaker is not None:
                            speaking.start_soon(speaker.run)
                        try:
                            await self._reply(uid, parts, speaker)
                        except BackendError as exc:  # kept out of the nursery's exception group
                            failure = exc
                            speaking.cancel_scope.cancel()
                        else:
                            reply = "".join(parts)
                            session.history.add("assistant", reply)
                            answered = True
                            session.touch()
                            await self.send("text", uid, content=reply, role="assistant", done=True)
                            if speaker is not None:
                                speaker.finish(None if session.stream else reply)
                    if failure is not None:
                        raise failure
            except BackendError as exc:
                if not answered:
                    self._forget_question()
                await self.send("error", uid, content=str(exc), **_limit_fields(exc))
                return
            finally:
                if session.reply is scope:
                    session.reply = None
        if scope.cancelled_caught and not answered:
            reply = "".join(parts)
            if reply:
                session.history.add("assistant", reply)
            await self.send("text", uid, content=reply, role="assistant", cancelled=True)
        if session.persist is not None:
            await session.persist()  # the turn, for a plane that resumes this session

    async def _reply(self, uid: str, parts: list[str], speaker: Speaker | None) -> None:
        # A replica that fails before the first token is retried once on another one.
        stream = self.session.stream
        for attempt in (1, 2):
            try:
                async for delta in self.backend.stream_chat(self.session, self.session.history.messages()):
                    parts.append(delta)
                    if stream:
                        await self.send("text_delta", uid, delta=delta, role="assistant")
                        if speaker is not None:
                            speaker.feed(delta)
                return
            except BackendError as exc:
                if attempt == 2 or parts or not exc.before_output:
                    raise
                self.session.group.unpin("llm")


class Speaker:
    """Speaks one reply sentence by sentence, in order, each as one `audio` message (a whole WAV).

    With streaming, sentences come as the LLM produces them (`feed`), so the first audio leaves
    before the reply is complete; without, the whole reply is spoken once it is (`finish(reply)`).
    A synthesis that fails gets one `error` and the rest of the reply is not spoken; the text
    reply is not affected.
    """

    def __init__(self, conversation: _Conversation, uid: str) -> None:
        self.conversation = conversation
        self.uid = uid
        self.splitter = SentenceSplitter()
        self._send, self._receive = trio.open_memory_channel[str](math.inf)

    def feed(self, delta: str) -> None:
        """More of the reply: its completed sentences are queued for speech."""
        for sentence in self.splitter.feed(delta):
            self._queue(sentence)

    def finish(self, whole: str | None = None) -> None:
        """The reply is complete: speak what is left (or `whole`), then stop."""
        rest = whole.strip() if whole is not None else self.splitter.flush()
        if rest:
            self._queue(rest)
        self._send.close()

    def _queue(self, sentence: str) -> None:
        try:
            self._send.send_nowait(sentence)
        except trio.BrokenResourceError:
            pass  # synthesis failed and stopped: the rest of the reply is text only

    async def run(self) -> None:
        """Synthesize queued sentences until `finish`; cancelled with the utterance."""
        conversation, session = self.conversation, self.conversation.session
        async with self._receive:
            async for sentence in self._receive:
                try:
                    audio = await conversation.backend.speak(session, sentence)
                except BackendError as exc:
                    await conversation.send("error", self.uid, content=f"speech synthesis failed: {exc}",
                                            **_limit_fields(exc))
                    return
                info = wav_info(audio)
                fields: dict[str, object] = {"format": "wav", "sample_rate": info.sample_rate} if info else {}
                await conversation.send("audio", self.uid, content=sentence, role="assistant",
                                        data=base64.b64encode(audio).decode(), **fields)


def _limit_fields(exc: BackendError) -> dict[str, object]:
    """A refusal by one of the key's limits names it and when to try again (whole seconds)."""
    if exc.code is None:
        return {}
    fields: dict[str, object] = {"code": exc.code}
    if exc.retry_after is not None:
        fields["retry_after"] = max(1, int(-(-exc.retry_after // 1)))
    return fields


async def serve_session(session: Session, socket: SessionSocket, backend: ChatBackend, *,
                        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
    """Serve one WebSocket of `session` until the client leaves or the session closes.

    The session generates one reply at a time across all its sockets: an utterance
    while one is in progress gets an `error`, and `cancel` from any of them stops it.

    Cancellation: stops the reply this socket asked for (resetting the worker stream)
    and returns.

    Error handling: a bad message or a failed reply gets an `error` and the socket stays
    usable; only a broken socket ends it.
    """
    conversation = _Conversation(session, socket, backend)
    session.touch()
    async with trio.open_nursery() as nursery:

        async def end_with_session() -> None:
            await session.closed.wait()
            await conversation.send("error", None, content=session.close_reason)
            await socket.close(CLOSE_SESSION_ENDED, session.close_reason[:120])
            nursery.cancel_scope.cancel()

        nursery.start_soon(end_with_session)
        while (raw := await socket.receive()) is not None:
            if len(raw) > max_message_bytes:
                await socket.close(CLOSE_TOO_BIG, f"message over {max_message_bytes} bytes")
                break
            session.touch()
            await conversation.handle(raw, nursery)
        nursery.cancel_scope.cancel()
