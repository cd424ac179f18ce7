"""Where a session's utterances go: the dispatcher, each pipeline stage pinned to one replica.

Consecutive utterances of a session form an utterance group that stays on one
replica per stage (ASR, LLM, TTS; runtime/sessions/group.py). When a replica
is gone, the next utterance re-pins that stage to another ready replica and the
conversation continues from the history the session keeps. Every call holds a
concurrency slot of the session's key and counts against its rpm/tpm and usage,
exactly like an HTTP call (runtime/dispatch).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, nullcontext
from typing import Protocol

from runtime.dispatch import Call, Dispatcher
from runtime.errors import FlowError
from runtime.gateway.audio import AUDIO_FIRST_BYTE_TIMEOUT
from runtime.gateway.errors import GatewayError
from runtime.http.sse import SSEError, sse_batches
from runtime.sessions.manager import Session
from runtime.sessions.wav import complete_wav
from runtime.tunnel import TunnelError


class BackendError(FlowError):
    """The model could not answer; `before_output` tells whether nothing reached the client yet."""

    def __init__(self, message: str, *, before_output: bool = True, code: str | None = None,
                 retry_after: float | None = None):
        self.before_output = before_output
        self.code = code  # a limit's (rate_limit_exceeded, ...) or the worker's (invalid_audio, ...)
        self.retry_after = retry_after
        super().__init__(message)


class ChatBackend(Protocol):
    """What a session needs from the models behind it."""

    def stream_chat(self, session: Session, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        """Yield the reply's text as the model produces it."""
        ...

    async def transcribe(self, session: Session, audio: bytes, fmt: str) -> str:
        """Speech to text with the session's ASR model."""
        ...

    async def speak(self, session: Session, text: str) -> bytes:
        """Text to speech with the session's TTS model and voice: one whole WAV file."""
        ...

    def turn(self, session: Session) -> AbstractAsyncContextManager[None]:
        """Hold what one turn (transcription, reply, speech) needs for its whole length."""
        ...


class ClusterBackend:
    """A session's model calls, through the dispatcher: the key's limits, usage and metrics apply
    as to HTTP calls (via="session"), and each stage of the session's pipeline is pinned to one
    replica (its utterance group, runtime/sessions/group.py)."""

    def __init__(self, dispatcher: Dispatcher, *, audio_first_byte_timeout: float = AUDIO_FIRST_BYTE_TIMEOUT):
        self.dispatcher = dispatcher
        # A transcription answers only once the whole file is heard: the gateway's wait for audio uploads.
        self.audio_first_byte_timeout = audio_first_byte_timeout

    @asynccontextmanager
    async def turn(self, session: Session) -> AsyncIterator[None]:
        """One concurrency slot of the session's key for a whole turn, shared by its model calls
        (the TTS runs beside the LLM); BackendError (concurrency_limit_exceeded) when none is free."""
        who = session.principal
        if who is None:
            raise BackendError("this session has no API key to account its calls to")
        async with AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(self.dispatcher.slot(who))
            except GatewayError as exc:
                raise BackendError(exc.message, code=exc.code, retry_after=exc.retry_after) from None
            session.slot_held = True
            try:
                yield
            finally:
                session.slot_held = False

    @asynccontextmanager
    async def _call(self, session: Session, stage: str, path: str, body: bytes,
                    content_type: str) -> AsyncIterator[Call]:
        """One model call of `stage` holding a concurrency slot of the session's key until it ends."""
        who = session.principal
        if who is None:
            raise BackendError("this session has no API key to account its calls to")
        model = session.models[stage]
        pin = session.group.place(stage, session.models, self.dispatcher.scheduler.routes,
                                  self.dispatcher.router.load)
        own_slot = not session.slot_held  # outside a turn: the slot and the rates in one limiter call
        try:
            async with self.dispatcher.admitted(who, model, via="session") if own_slot else nullcontext():
                wait = (max(self.audio_first_byte_timeout, self.dispatcher.first_byte_timeout)
                        if stage == "asr" else None)
                call = await self.dispatcher.send(who, model, path, body, via="session", pin=pin,
                                                  headers=[("content-type", content_type)],
                                                  first_byte_timeout=wait, admitted=own_slot)
                async with call:
                    if call.status != 200:
                        detail = (await _read(call))[:1000].decode("utf-8", "replace")
                        message, code = _error_text(detail)
                        raise BackendError(f"model {model!r} answered HTTP {call.status}: {message}", code=code)
                    yield call
        except GatewayError as exc:
            raise BackendError(exc.message, code=exc.code, retry_after=exc.retry_after) from None

    async def stream_chat(self, session: Session, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        """Yield text deltas of a streamed chat completion.

        The deltas that arrive together (one chunk from the tunnel) come as one: when the
        model is ahead of the session, the client gets fewer, larger messages; a slow
        model's tokens still come one by one, as soon as each arrives.

        Cancellation: closing or cancelling the iteration resets the stream, so the
        worker stops generating at once.
        """
        request: dict[str, object] = {"model": session.model, "messages": messages, "stream": True}
        if session.max_tokens is not None:
            request["max_tokens"] = session.max_tokens
        body = json.dumps(request).encode()
        produced = False
        async with self._call(session, "llm", "/v1/chat/completions", body, "application/json") as call:
            try:
                async for batch in sse_batches(call.body()):
                    done = False
                    deltas = []
                    for data in batch:
                        if data.strip() == "[DONE]":
                            done = True
                            break
                        deltas.append(_delta(data))
                    delta = "".join(deltas)
                    if delta:
                        produced = True
                        yield delta
                    if done:
                        break
            except (TunnelError, SSEError) as exc:
                raise BackendError(f"the reply broke off: {exc}", before_output=not produced) from None

    async def transcribe(self, session: Session, audio: bytes, fmt: str) -> str:
        """Speech to text through the ASR model's `/v1/audio/transcriptions`."""
        if not session.asr_model:
            raise BackendError("this session has no ASR model; create it with \"asr_model\" to send audio")
        boundary = f"flowctl-audio-{secrets.token_hex(16)}"  # random: the audio cannot contain it
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{session.asr_model}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"audio.{fmt}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + audio + f"\r\n--{boundary}--\r\n".encode()
        async with self._call(session, "asr", "/v1/audio/transcriptions", body,
                              f"multipart/form-data; boundary={boundary}") as call:
            answer = await _read(call)
        try:
            text = json.loads(answer).get("text", "")
        except (ValueError, AttributeError, RecursionError):
            raise BackendError("the ASR model's answer is not JSON with a \"text\"") from None
        return str(text)

    async def speak(self, session: Session, text: str) -> bytes:
        """Text to speech through the TTS model's `/v1/audio/speech`: one whole WAV file."""
        if not session.tts_model:
            raise BackendError("this session has no TTS model")
        request: dict[str, object] = {"model": session.tts_model, "input": text, "response_format": "wav"}
        if session.voice:
            request["voice"] = session.voice
        async with self._call(session, "tts", "/v1/audio/speech", json.dumps(request).encode(),
                              "application/json") as call:
            return complete_wav(await _read(call))


async def _read(call: Call) -> bytes:
    try:
        return await call.read()
    except TunnelError as exc:
        raise BackendError(f"the reply broke off: {exc}") from None


def _delta(data: str) -> str:
    try:
        chunk = json.loads(data)
        return chunk["choices"][0]["delta"].get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        return ""


def _error_text(body: str) -> tuple[str, str | None]:
    """A worker's error body as (message, code): OpenAI's {"error": {"message", "code"}}, else the text."""
    try:
        error = json.loads(body)["error"]
        code = error.get("code")
        return str(error["message"]), code if isinstance(code, str) and code.isidentifier() else None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return body.strip() or "no detail", None
