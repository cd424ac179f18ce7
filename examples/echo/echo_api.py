"""The echo worker's OpenAI semantics: request validation and response bodies, no I/O.

Output is deterministic: chat answers with the last user message, completions with the
prompt, embeddings are unit vectors derived from SHA-256 of the input. A "token" is a run
of whitespace plus the word after it, so the pieces of a stream join back to the text.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

MAX_DELAY_S = 60.0
MAX_TOKENS_LIMIT = 100_000
MAX_DIMENSIONS = 4096
DEFAULT_DIMENSIONS = 64
FILLER_TOKEN = " echo"
_TOKEN = re.compile(r"\s*\S+")


class RequestError(Exception):
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


def _invalid(param: str, problem: str) -> RequestError:
    return RequestError(400, f"{param} {problem}", code="invalid_value", param=param)


def _field(body: dict[str, Any], key: str, types: type | tuple[type, ...], default: Any = None,
           *, required: bool = False) -> Any:
    if key not in body or body[key] is None:
        if required:
            raise RequestError(400, f"{key} is required", code="missing_required_parameter",
                               param=key)
        return default
    value = body[key]
    wanted = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in wanted:
        raise _invalid(key, f"must be {_names(wanted)}, not bool")
    if float in wanted and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, wanted):
        raise _invalid(key, f"must be {_names(wanted)}, not {type(value).__name__}")
    return value


def _names(types: tuple[type, ...]) -> str:
    words = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "a list", dict: "an object"}
    return " or ".join(words.get(t, t.__name__) for t in types)


def _bounded_int(body: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    value = _field(body, key, int)
    if value is not None and not lo <= value <= hi:
        raise _invalid(key, f"{value} is out of range ({lo}..{hi})")
    return value


@dataclass(frozen=True)
class Generation:
    """A validated chat or completion request, reduced to what the echo needs."""

    model: str
    prompts: tuple[str, ...]
    prompt_tokens: int
    max_tokens: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    delay_s: float | None
    tokens: int | None


def tokenize(text: str) -> list[str]:
    """Split text into word tokens that join back to it (trailing whitespace dropped)."""
    return _TOKEN.findall(text)


def _text_of(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _invalid(f"{where}[{i}]", "must be an object with a type")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise _invalid(f"{where}[{i}].text", "must be a string")
                parts.append(part["text"])
        return "".join(parts)
    raise _invalid(where, f"must be a string or a list of parts, not {type(content).__name__}")


def _common(body: dict[str, Any], prompts: tuple[str, ...], prompt_tokens: int) -> Generation:
    model = _field(body, "model", str, required=True)
    max_tokens = _bounded_int(body, "max_tokens", 1, MAX_TOKENS_LIMIT)
    if "max_completion_tokens" in body:
        max_tokens = _bounded_int(body, "max_completion_tokens", 1, MAX_TOKENS_LIMIT)
    stop = _field(body, "stop", (str, list), [])
    stop = [stop] if isinstance(stop, str) else stop
    if len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise _invalid("stop", "must be a non-empty string or a list of at most 4 of them")
    n = _bounded_int(body, "n", 1, 1)
    del n
    stream = _field(body, "stream", bool, False)
    options = _field(body, "stream_options", dict, {})
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise _invalid("stream_options.include_usage", "must be a boolean")
    delay = _field(body, "echo_delay_s", float)
    if delay is not None and not 0 <= delay <= MAX_DELAY_S:
        raise _invalid("echo_delay_s", f"{delay} is out of range (0..{MAX_DELAY_S})")
    tokens = _bounded_int(body, "echo_tokens", 0, MAX_TOKENS_LIMIT)
    return Generation(model=model, prompts=prompts, prompt_tokens=prompt_tokens,
                      max_tokens=max_tokens, stop=tuple(stop), stream=stream,
                      include_usage=include_usage, delay_s=delay, tokens=tokens)


def parse_chat(body: dict[str, Any]) -> Generation:
    """Validate a /v1/chat/completions body; the answer is the last user message."""
    messages = _field(body, "messages", list, required=True)
    if not messages:
        raise _invalid("messages", "must not be empty")
    texts, last_user = [], ""
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(f"messages[{i}]", "must be an object")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise RequestError(400, f"messages[{i}].role is required",
                               code="missing_required_parameter", param=f"messages[{i}].role")
        text = _text_of(message.get("content"), f"messages[{i}].content")
        texts.append(text)
        if role == "user":
            last_user = text
    prompt_tokens = sum(len(tokenize(t)) for t in texts)
    return _common(body, (last_user,), prompt_tokens)


def parse_completion(body: dict[str, Any]) -> Generation:
    """Validate a /v1/completions body; each prompt is answered with itself."""
    prompt = _field(body, "prompt", (str, list), required=True)
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise _invalid("prompt", "must be a string or a non-empty list of strings")
    gen = _common(body, tuple(prompts), sum(len(tokenize(p)) for p in prompts))
    if gen.stream and len(prompts) != 1:
        raise _invalid("prompt", "must be a single string when streaming")
    return gen


def plan(text: str, gen: Generation) -> tuple[list[str], str]:
    """The tokens to send for one answer and the finish reason ("stop" or "length")."""
    words = tokenize(text)
    if gen.tokens is not None:
        source = words or [FILLER_TOKEN]
        words = [source[i % len(source)] for i in range(gen.tokens)]
    finish = "stop"
    if gen.max_tokens is not None and len(words) > gen.max_tokens:
        words, finish = words[: gen.max_tokens], "length"
    joined = "".join(words)
    hits = [joined.index(s) for s in gen.stop if s in joined]
    if hits:
        cut, used, kept = min(hits), 0, []
        for word in words:
            if used + len(word) > cut:
                if cut > used:
                    kept.append(word[: cut - used])
                break
            kept.append(word)
            used += len(word)
        return kept, "stop"
    return words, finish


def new_id(prefix: str) -> str:
    """A fresh response id such as `chatcmpl-1f3a...`."""
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The OpenAI usage object."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(gen: Generation, rid: str, tokens: list[str], finish: str) -> dict[str, Any]:
    """A complete (non-streamed) chat.completion object."""
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": gen.model,
        "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                     "message": {"role": "assistant", "content": "".join(tokens)}}],
        "usage": usage(gen.prompt_tokens, len(tokens)),
    }


def completion_response(gen: Generation, rid: str,
                        answers: list[tuple[list[str], str]]) -> dict[str, Any]:
    """A complete text_completion object, one choice per prompt."""
    return {
        "id": rid, "object": "text_completion", "created": int(time.time()), "model": gen.model,
        "choices": [{"index": i, "text": "".join(toks), "logprobs": None, "finish_reason": fin}
                    for i, (toks, fin) in enumerate(answers)],
        "usage": usage(gen.prompt_tokens, sum(len(toks) for toks, _ in answers)),
    }


def chat_chunk(gen: Generation, rid: str, created: int, *, delta: dict[str, Any] | None = None,
               finish: str | None = None, final_usage: dict[str, int] | None = None
               ) -> dict[str, Any]:
    """One chat.completion.chunk; with `final_usage` it is the usage chunk (no choices)."""
    chunk: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created,
                             "model": gen.model}
    if final_usage is not None:
        chunk["choices"] = []
        chunk["usage"] = final_usage
        return chunk
    chunk["choices"] = [{"index": 0, "delta": delta or {}, "logprobs": None,
                         "finish_reason": finish}]
    if gen.include_usage:
        chunk["usage"] = None
    return chunk


def completion_chunk(gen: Generation, rid: str, created: int, *, text: str = "",
                     finish: str | None = None, final_usage: dict[str, int] | None = None
                     ) -> dict[str, Any]:
    """One streamed text_completion; with `final_usage` it is the usage chunk (no choices)."""
    chunk: dict[str, Any] = {"id": rid, "object": "text_completion", "created": created,
                             "model": gen.model}
    if final_usage is not None:
        chunk["choices"] = []
        chunk["usage"] = final_usage
        return chunk
    chunk["choices"] = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
    if gen.include_usage:
        chunk["usage"] = None
    return chunk


def embed(text: str, dimensions: int) -> list[float]:
    """A unit vector drawn from SHA-256 of the text: same text, same vector."""
    raw = b""
    block = 0
    while len(raw) < 4 * dimensions:
        raw += hashlib.sha256(f"{block}:{text}".encode()).digest()
        block += 1
    values = [v / 2**31 - 1.0 for v in struct.unpack(f"<{dimensions}I", raw[: 4 * dimensions])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def embeddings_response(body: dict[str, Any]) -> dict[str, Any]:
    """Validate a /v1/embeddings body and answer it."""
    model = _field(body, "model", str, required=True)
    raw = _field(body, "input", (str, list), required=True)
    items = [raw] if isinstance(raw, str) else raw
    if raw and all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
        items = [raw]  # one input given as token ids
    if not items:
        raise _invalid("input", "must not be empty")
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list) and all(isinstance(t, int) and not isinstance(t, bool)
                                            for t in item):
            texts.append(" ".join(map(str, item)))
        else:
            raise _invalid(f"input[{i}]", "must be a string or a list of token ids")
    dimensions = _bounded_int(body, "dimensions", 1, MAX_DIMENSIONS) or DEFAULT_DIMENSIONS
    encoding = _field(body, "encoding_format", str, "float")
    if encoding not in ("float", "base64"):
        raise _invalid("encoding_format", f"{encoding!r} is not 'float' or 'base64'")
    data = []
    for i, text in enumerate(texts):
        vector: Any = embed(text, dimensions)
        if encoding == "base64":
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    count = sum(max(1, len(tokenize(t))) for t in texts)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": count, "total_tokens": count}}
