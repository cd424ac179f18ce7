"""A session's conversation, bounded by an estimate of its tokens (oldest turns go first)."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MAX_TOKENS = 4096
# A chat template spends a few tokens per message on its role markers.
PER_MESSAGE_TOKENS = 4


def estimate_tokens(text: str) -> int:
    """A model-agnostic estimate: about four characters per token, at least one."""
    return max(1, (len(text) + 3) // 4)


@dataclass
class History:
    """The turns of one session; `messages()` is what the model sees next."""

    system_prompt: str = ""
    max_tokens: int = DEFAULT_MAX_TOKENS
    turns: list[tuple[str, str]] = field(default_factory=list)

    def add(self, role: str, content: str) -> None:
        """Append a turn, then drop the oldest ones until the whole fits the budget."""
        self.turns.append((role, content))
        budget = self.max_tokens - self._cost("system", self.system_prompt) if self.system_prompt else self.max_tokens
        # The newest turn always stays, even alone over budget: the model needs the question.
        while len(self.turns) > 1 and sum(self._cost(r, c) for r, c in self.turns) > budget:
            del self.turns[0]
        # Never start with an assistant turn: its question is gone.
        while len(self.turns) > 1 and self.turns[0][0] == "assistant":
            del self.turns[0]

    def messages(self) -> list[dict[str, str]]:
        """OpenAI chat messages: the system prompt, then the kept turns."""
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return head + [{"role": role, "content": content} for role, content in self.turns]

    def tokens(self) -> int:
        """The estimated size of `messages()`."""
        return sum(self._cost(m["role"], m["content"]) for m in self.messages())

    @staticmethod
    def _cost(role: str, content: str) -> int:
        return estimate_tokens(content) + PER_MESSAGE_TOKENS
