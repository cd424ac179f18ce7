"""Where a session's utterances go: a replica of its model, pinned for the whole session.

Consecutive utterances of a session form an utterance group that stays on one
replica (its caches stay warm, its load stays predictable). When that replica
is gone, the next utterance re-pins the session to another ready replica and the
conversation continues from the history the session keeps.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Protocol

from runtime.errors import FlowError
from runtime.exception_groups import collapse
from runtime.http.sse import SSEError, sse_batches
from runtime.scheduler.service import Route, Scheduler
from runtime.sessions.manager import Session
from runtime.tunnel import TunnelError
from runtime.tunnel.http import TunnelResponse, send_request


class BackendError(FlowError):
    """The model could not answer; `before_output` tells whether nothing reached the client yet."""

    def __init__(self, message: str, *, before_output: bool = True):
        self.before_output = before_output
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
        """Text to speech with the session's TTS model."""
        ...


class ClusterBackend:
    """Sends a session's requests through the tunnel to its pinned replica."""

    def __init__(self, scheduler: Scheduler, *, rng: random.Random | None = None):
        self.scheduler = scheduler
        self._rng = rng or random.Random()

    def pin(self, session: Session, model: str) -> Route:
        """The session's replica for `model`, re-pinned if it is no longer ready."""
        routes = self.scheduler.routes(model)
        if not routes:
            raise BackendError(f"no ready replica serves model {model!r}")
        if model == session.model:
            for route in routes:
                if route.replica.replica_id == session.replica_id:
                    session.node_id = route.node_id  # a replica keeps its id when it moves
                    return route
            # Least-loaded by the number of sessions pinned there is not known here; spread at random.
            route = self._rng.choice(routes)
            session.replica_id, session.node_id = route.replica.replica_id, route.node_id
            return route
        return self._rng.choice(routes)

    async def _call(self, session: Session, model: str, path: str, body: bytes,
                    content_type: str) -> TunnelResponse:
        route = self.pin(session, model)
        mux = self.scheduler.mux_for(route.node_id)
        if mux is None:
            raise BackendError(f"the node of replica {route.replica.replica_id} is not connected")
        try:
            with collapse():  # send_request runs a nursery: its one TunnelError comes in a group
                response = await send_request(mux, "POST", path, [("content-type", content_type)], body,
                                              route={"replica_id": route.replica.replica_id})
        except TunnelError as exc:
            raise BackendError(f"replica {route.replica.replica_id} is unreachable: {exc}") from None
        if response.status != 200:
            detail = (await _read(response))[:500].decode("utf-8", "replace")
            raise BackendError(f"model {model!r} answered HTTP {response.status}: {_error_text(detail)}")
        return response

    async def stream_chat(self, session: Session, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        """Yield text deltas of a streamed chat completion.

        The deltas that arrive together (one chunk from the tunnel) come as one: when the
        model is ahead of the session, the client gets fewer, larger messages; a slow
        model's tokens still come one by one, as soon as each arrives.

        Cancellation: closing or cancelling the iteration resets the stream, so the
        worker stops generating at once.
        """
        body = json.dumps({"model": session.model, "messages": messages, "stream": True}).encode()
        response = await self._call(session, session.model, "/v1/chat/completions", body, "application/json")
        produced = False
        try:
            async for batch in sse_batches(response.body()):
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
        finally:
            response.close()

    async def transcribe(self, session: Session, audio: bytes, fmt: str) -> str:
        """Speech to text through the ASR model's `/v1/audio/transcriptions`."""
        if not session.asr_model:
            raise BackendError("this session has no ASR model; create it with \"asr_model\" to send audio")
        boundary = "flowctl-session-audio"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{session.asr_model}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"audio.{fmt}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + audio + f"\r\n--{boundary}--\r\n".encode()
        response = await self._call(session, session.asr_model, "/v1/audio/transcriptions", body,
                                    f"multipart/form-data; boundary={boundary}")
        try:
            text = json.loads(await _read(response)).get("text", "")
        except (ValueError, AttributeError, RecursionError):
            raise BackendError("the ASR model's answer is not JSON with a \"text\"") from None
        return str(text)

    async def speak(self, session: Session, text: str) -> bytes:
        """Text to speech through the TTS model's `/v1/audio/speech`."""
        assert session.tts_model
        body = json.dumps({"model": session.tts_model, "input": text}).encode()
        response = await self._call(session, session.tts_model, "/v1/audio/speech", body, "application/json")
        return await _read(response)


async def _read(response: TunnelResponse) -> bytes:
    try:
        return await response.read()
    except TunnelError as exc:
        raise BackendError(f"the reply broke off: {exc}") from None


def _delta(data: str) -> str:
    try:
        chunk = json.loads(data)
        return chunk["choices"][0]["delta"].get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        return ""


def _error_text(body: str) -> str:
    try:
        return json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return body.strip() or "no detail"
