"""The values the engine, the decode loop and the HTTP layer pass around."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    """How to sample one completion."""

    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0


@dataclass(frozen=True)
class Finished:
    """The last item of a stream: why it ended and the token counts."""

    finish_reason: str  # "stop", "length" or "error" (a cancelled stream gets none)
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens found in the KV cache, not evaluated again


class ContextTooLong(Exception):
    """The prompt leaves no room for a completion in the model's context window."""

    def __init__(self, prompt_tokens: int, n_ctx: int):
        super().__init__(f"the prompt has {prompt_tokens} tokens; this model's context window "
                         f"holds {n_ctx}, so there is no room for a completion")
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
