"""OpenAI request validation and response bodies for the llama-chat worker; no I/O.

Defaults follow llama.cpp's server (temperature 0.8, top_p 0.95, top_k 40, min_p 0.05),
which suit a small model better than OpenAI's temperature 1 without top_k.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

from llama_types import Finished, Sampling

DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 2**31 - 1
MAX_STOP = 4


class ApiError(Exception):
    """A request the worker refuses, with its HTTP status and OpenAI error fields."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.kind = kind

    def body(self) -> dict[str, Any]:
        """The OpenAI error body."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def invalid(param: str, problem: str) -> ApiError:
    """A 400 naming the parameter."""
    return ApiError(400, f"{param} {problem}", code="invalid_value", param=param)


def _missing(param: str) -> ApiError:
    return ApiError(400, f"{param} is required", code="missing_required_parameter", param=param)


def _get(body: dict[str, Any], key: str, kind: type, default: Any = None, *,
         required: bool = False, lo: float | None = None, hi: float | None = None) -> Any:
    value = body.get(key)
    if value is None:
        if required:
            raise _missing(key)
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        word = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
                dict: "an object", list: "a list"}[kind]
        raise invalid(key, f"must be {word}, not {type(value).__name__}")
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise invalid(key, f"{value} is out of range ({lo}..{hi})")
    return value


@dataclass(frozen=True)
class CompletionRequest:
    """A validated chat or text completion request."""

    model: str
    sampling: Sampling
    stream: bool
    include_usage: bool
    prompt: str = ""
    messages: tuple[tuple[str, str], ...] = ()


def _content_text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise invalid(f"{where}[{i}]", "must be an object with a type")
            if part["type"] != "text":
                raise invalid(f"{where}[{i}].type", f"{part['type']!r} is not supported "
                              "(this model reads text only)")
            if not isinstance(part.get("text"), str):
                raise invalid(f"{where}[{i}].text", "must be a string")
            texts.append(part["text"])
        return "".join(texts)
    raise invalid(where, f"must be a string or a list of parts, not {type(content).__name__}")


def _sampling(body: dict[str, Any]) -> Sampling:
    # Larger than the context is allowed, as in llama.cpp's server: generation stops there.
    max_tokens = _get(body, "max_tokens", int, DEFAULT_MAX_TOKENS, lo=1, hi=MAX_TOKENS_LIMIT)
    max_tokens = _get(body, "max_completion_tokens", int, max_tokens, lo=1, hi=MAX_TOKENS_LIMIT)
    stop = body.get("stop")
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOP or not all(
            isinstance(s, str) and s for s in stops):
        raise invalid("stop", f"must be a non-empty string or a list of at most {MAX_STOP}")
    _get(body, "n", int, 1, lo=1, hi=1)
    return Sampling(
        max_tokens=max_tokens,
        temperature=_get(body, "temperature", float, 0.8, lo=0.0, hi=2.0),
        top_p=_get(body, "top_p", float, 0.95, lo=0.0, hi=1.0),
        top_k=_get(body, "top_k", int, 40, lo=0, hi=1_000_000),
        min_p=_get(body, "min_p", float, 0.05, lo=0.0, hi=1.0),
        seed=_get(body, "seed", int, None, lo=-(2**63), hi=2**64 - 1) if "seed" in body else None,
        stop=tuple(stops),
        presence_penalty=_get(body, "presence_penalty", float, 0.0, lo=-2.0, hi=2.0),
        frequency_penalty=_get(body, "frequency_penalty", float, 0.0, lo=-2.0, hi=2.0),
        repeat_penalty=_get(body, "repeat_penalty", float, 1.0, lo=0.0, hi=10.0),
    )


def _streaming(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = _get(body, "stream", bool, False)
    options = _get(body, "stream_options", dict, {})
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise invalid("stream_options.include_usage", "must be a boolean")
    return stream, include_usage


def parse_chat(body: dict[str, Any]) -> CompletionRequest:
    """Validate a /v1/chat/completions body."""
    model = _get(body, "model", str, required=True)
    raw = _get(body, "messages", list, required=True)
    if not raw:
        raise invalid("messages", "must not be empty")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise invalid(f"messages[{i}]", "must be an object")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise _missing(f"messages[{i}].role")
        messages.append((role, _content_text(message.get("content"), f"messages[{i}].content")))
    stream, include_usage = _streaming(body)
    return CompletionRequest(model=model, sampling=_sampling(body), stream=stream,
                             include_usage=include_usage, messages=tuple(messages))


def parse_completion(body: dict[str, Any]) -> CompletionRequest:
    """Validate a /v1/completions body (one prompt string)."""
    model = _get(body, "model", str, required=True)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if prompt is None:
        raise _missing("prompt")
    if not isinstance(prompt, str):
        raise invalid("prompt", "must be a string (one prompt per request)")
    stream, include_usage = _streaming(body)
    return CompletionRequest(model=model, sampling=_sampling(body), stream=stream,
                             include_usage=include_usage, prompt=prompt)


def parse_embeddings(body: dict[str, Any]) -> tuple[str, list[str], str]:
    """Validate a /v1/embeddings body: (model, texts, encoding_format)."""
    model = _get(body, "model", str, required=True)
    raw = body.get("input")
    if raw is None:
        raise _missing("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(
            isinstance(t, str) and t for t in texts):
        raise invalid("input", "must be a non-empty string or a list of them")
    encoding = _get(body, "encoding_format", str, "float")
    if encoding not in ("float", "base64"):
        raise invalid("encoding_format", f"{encoding!r} is not 'float' or 'base64'")
    if body.get("dimensions") is not None:
        raise invalid("dimensions", "is not supported by this model")
    return model, texts, encoding


def usage(done: Finished) -> dict[str, int]:
    """The OpenAI usage object."""
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": done.cached_tokens}}


class Reply:
    """Builds the bodies of one chat or text completion, whole or as stream chunks."""

    def __init__(self, request: CompletionRequest, *, chat: bool):
        self.request = request
        self.chat = chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"

    def whole(self, text: str, done: Finished) -> dict[str, Any]:
        """The non-streamed response."""
        choice: dict[str, Any] = {"index": 0, "finish_reason": done.finish_reason, "logprobs": None}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return {"id": self.id, "object": self.object, "created": self.created,
                "model": self.request.model, "choices": [choice], "usage": usage(done)}

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk = {"id": self.id, "object": self.object + ("" if not self.chat else ".chunk"),
                 "created": self.created, "model": self.request.model, "choices": choices}
        if self.request.include_usage:
            chunk["usage"] = None
        return chunk

    def _choice(self, text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
        if not self.chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def first(self) -> dict[str, Any] | None:
        """The opening chunk (chat only: the assistant role)."""
        return self._chunk([self._choice("", None, role=True)]) if self.chat else None

    def piece(self, text: str) -> dict[str, Any]:
        """A chunk carrying generated text."""
        return self._chunk([self._choice(text, None)])

    def last(self, done: Finished) -> list[dict[str, Any]]:
        """The closing chunks: the finish reason, then usage if asked for."""
        chunks = [self._chunk([self._choice(None if self.chat else "", done.finish_reason)])]
        if self.request.include_usage:
            chunks.append({**self._chunk([]), "usage": usage(done)})
        return chunks


def embeddings_body(model: str, vectors: list[list[float]], tokens: int,
                    encoding: str) -> dict[str, Any]:
    """The /v1/embeddings response."""
    data = []
    for i, vector in enumerate(vectors):
        value: Any = vector
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
