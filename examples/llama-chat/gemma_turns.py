"""Gemma's turn format, for a GGUF that carries no chat template.

    <start_of_turn>user
    {system}

    {user}<end_of_turn>
    <start_of_turn>model
    {assistant}<end_of_turn>
    <start_of_turn>model

Gemma has no system role; as Google's own template does, system text opens the first user
turn. The markers are returned apart from the messages' text so that only they are parsed
as special tokens: a user who types "<start_of_turn>" gets those characters, not a turn.
"""

from __future__ import annotations

from collections.abc import Sequence

START = "<start_of_turn>"
END = "<end_of_turn>"
ROLES = {"user": "user", "assistant": "model", "model": "model"}


class BadMessages(ValueError):
    """The messages cannot be put in Gemma's turn format."""


def chat_segments(messages: Sequence[tuple[str, str]]) -> list[tuple[str, bool]]:
    """(text, is_special_markup) pieces of the prompt for (role, content) messages."""
    system = [content for role, content in messages if role in ("system", "developer")]
    turns = [(role, content) for role, content in messages if role not in ("system", "developer")]
    for role, _ in turns:
        if role not in ROLES:
            raise BadMessages(f"role {role!r} is not one of system, developer, user, assistant")
    if system:
        preamble = "\n\n".join(system)
        if turns and turns[0][0] == "user":
            turns[0] = ("user", f"{preamble}\n\n{turns[0][1]}")
        else:
            turns.insert(0, ("user", preamble))
    segments: list[tuple[str, bool]] = []
    for role, content in turns:
        segments.append((f"{START}{ROLES[role]}\n", True))
        segments.append((content, False))
        segments.append((f"{END}\n", True))
    segments.append((f"{START}model\n", True))
    return segments


def render(segments: Sequence[tuple[str, bool]]) -> str:
    """The prompt as one string (for logs and tests)."""
    return "".join(text for text, _ in segments)
