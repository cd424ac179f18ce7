"""Concurrent streams and multi-turn sessions against an OpenAI-compatible server (bench/llm.py).

`run_load` opens N streamed /v1/completions at once (prompt i % len(PROMPTS), greedy) and
times every piece: aggregate tokens/s is all pieces over the wall time from the first send
to the last piece; inter-token latency is the gap between two pieces of one stream.
`session_ttfts` plays a growing chat: each turn sends the whole history plus a new user
message and records the time to the first piece of the reply.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

import httpx
import trio

PROMPTS = ("The capital of France is", "Water boils at", "Once upon a time",
           "The best way to learn a language is", "The history of Rome begins with",
           "My favourite colour is", "In the morning I usually", "The largest planet is")
USER_TURNS = ("Tell me about the sea.", "What lives in it?", "Which of them is the largest?",
              "How deep does it dive?", "What does it eat?", "Is it endangered?",
              "Where can I see one?", "What about dolphins?", "Are they smart?",
              "Thank you. Summarize our talk.")
TIMEOUT_S = 600.0


@dataclass(frozen=True)
class LoadResult:
    """Figures of one load run."""

    streams: int
    tokens: int
    wall_s: float
    itl_ms: tuple[float, ...]
    ttft_ms: tuple[float, ...]
    decode_s: float = 0.0  # from the first piece of any stream to the last piece

    @property
    def tokens_per_s(self) -> float:
        """Aggregate decode rate: tokens after each stream's first, over `decode_s`."""
        rest = self.tokens - len(self.ttft_ms)
        return rest / self.decode_s if self.decode_s > 0 else float("nan")

    @property
    def wall_tokens_per_s(self) -> float:
        """All tokens over the wall time from the first send (TTFT included)."""
        return self.tokens / self.wall_s if self.wall_s > 0 else float("nan")

    def itl(self, q: float) -> float:
        """The q-quantile (0..1) of inter-token latency, ms."""
        if len(self.itl_ms) < 2:
            return float("nan")
        return statistics.quantiles(self.itl_ms, n=100, method="inclusive")[round(q * 100) - 1]


def _headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def _pieces(client: httpx.AsyncClient, path: str, body: dict) -> tuple[float, list[float]]:
    """Send one streamed request; (send time, arrival time of each non-empty piece)."""
    began = time.perf_counter()
    times: list[float] = []
    async with client.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            choice = choices[0]
            text = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
            if text:
                times.append(time.perf_counter())
    return began, times


def run_load(url: str, model: str, streams: int, tokens: int, key: str | None = None) -> LoadResult:
    """`streams` concurrent streamed completions of `tokens` tokens each."""

    async def main() -> LoadResult:
        results: list[tuple[float, list[float]]] = []
        limits = httpx.Limits(max_connections=streams + 4)
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, headers=_headers(key),
                                     limits=limits) as client:
            async def one(i: int) -> None:
                body = {"model": model, "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": tokens,
                        "temperature": 0.0, "repeat_penalty": 1.0, "stream": True}
                results.append(await _pieces(client, "/v1/completions", body))

            began = time.perf_counter()
            with trio.fail_after(TIMEOUT_S):
                async with trio.open_nursery() as nursery:
                    for i in range(streams):
                        nursery.start_soon(one, i)
        end = max((t[-1] for _, t in results if t), default=began)
        first = min((t[0] for _, t in results if t), default=end)
        gaps = [1000 * (b - a) for _, t in results for a, b in zip(t, t[1:], strict=False)]
        ttfts = [1000 * (t[0] - s) for s, t in results if t]
        return LoadResult(streams, sum(len(t) for _, t in results), end - began,
                          tuple(gaps), tuple(ttfts), end - first)

    return trio.run(main)


def session_ttfts(url: str, model: str, turns: int, tokens: int, key: str | None = None,
                  system: str = "You are a patient marine biologist. ") -> list[tuple[float, int, int]]:
    """(TTFT ms, prompt tokens, cached prompt tokens) of each turn of a growing chat (the
    whole history resent every turn); the server's `usage` says what came from its cache.

    A turn's TTFT is the time of a 1-token completion of the history: the prompt's
    evaluation and one decode, whatever text the model would open its reply with (a base
    model's first tokens may render as nothing). The history then grows by a fixed reply of
    about `tokens` words and the next user message, as a session's would.
    """

    async def main() -> list[tuple[float, int, int]]:
        out: list[tuple[float, int, int]] = []
        reply = " ".join(["That is a good question about the ocean and its animals."] * (tokens // 10 + 1))
        messages: list[dict[str, str]] = [
            {"role": "system", "content": system * 8}]
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, headers=_headers(key)) as client:
            for turn in range(turns):
                messages.append({"role": "user", "content": USER_TURNS[turn % len(USER_TURNS)]})
                body = {"model": model, "messages": messages, "max_tokens": 1, "temperature": 0.0}
                began = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body)
                ttft = 1000 * (time.perf_counter() - began)
                if response.status_code != 200:
                    raise RuntimeError(f"turn {turn + 1}: HTTP {response.status_code}: {response.text[:300]}")
                usage = response.json().get("usage") or {}
                cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
                out.append((ttft, int(usage.get("prompt_tokens") or 0), int(cached)))
                messages.append({"role": "assistant", "content": reply})
        return out

    return trio.run(main)
