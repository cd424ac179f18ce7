"""The tutor table: seed 002's per-tutor engines, each `tutor_id` mapped to a voice pipeline.

In the config file, inline or as a path to a TOML or JSON file of the same shape::

    [tutors.1]
    model = "gemma-3-270m"        # the LLM (required)
    asr_model = "whisper-base"    # speech to text, for audio messages
    tts_model = "piper-joe"       # text to speech, for audio replies
    voice = "joe"                 # the TTS voice
    system_prompt = "You are a patient English tutor."

    tutors = "~/tutors.toml"      # or: the table in a file (top-level [1], [2], ... there)

`flowctl up --tutors FILE` and `FLOWCTL_TUTORS=FILE` name such a file. Only the standard
library is used: flowctl.config imports this for every command.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from flowctl.errors import CliError

FIELDS = ("model", "asr_model", "tts_model", "voice", "system_prompt")
MODEL_FIELDS = ("model", "asr_model", "tts_model")
MAX_TUTORS = 10_000
MAX_SYSTEM_PROMPT = 32_000
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_TUTOR_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_VOICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def load_tutors(value: Any, where: str, base: Path) -> dict[str, dict[str, str]]:
    """The tutor table from an inline table or a file path; CliError naming what is wrong."""
    if isinstance(value, str | os.PathLike) and not isinstance(value, dict):
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        where, value = str(path), _read(path, where)
    if not isinstance(value, dict):
        raise CliError(f"{where}: tutors must be a table of tutor ids, or the path of a TOML or JSON file of one")
    if len(value) > MAX_TUTORS:
        raise CliError(f"{where}: tutors has {len(value)} entries, more than {MAX_TUTORS}")
    return {str(tutor): _pipeline(str(tutor), entry, where) for tutor, entry in value.items()}


def _read(path: Path, where: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CliError(f"{where}: cannot read the tutors file {str(path)!r}: {reason}") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise CliError(f"{path}: the tutors file is not valid {kind}: {exc}") from None


def _pipeline(tutor: str, entry: Any, where: str) -> dict[str, str]:
    if not _TUTOR_ID.match(tutor):
        raise CliError(f"{where}: tutor id {tutor!r} must be 1 to 64 letters, digits or ._:-")
    if not isinstance(entry, dict):
        raise CliError(f"{where}: tutor {tutor} must be a table with model, asr_model, tts_model, voice")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise CliError(f"{where}: tutor {tutor}: unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
    if "model" not in entry:
        raise CliError(f"{where}: tutor {tutor} needs a \"model\" (its LLM)")
    for key, value in entry.items():
        if not isinstance(value, str):
            raise CliError(f"{where}: tutor {tutor}: {key} must be a string, got {value!r}")
        if key in MODEL_FIELDS and not _MODEL.match(value):
            raise CliError(f"{where}: tutor {tutor}: {key} {value!r} is not a model id")
        if key == "voice" and not _VOICE.match(value):
            raise CliError(f"{where}: tutor {tutor}: voice {value!r} is not a voice name")
        if key == "system_prompt" and len(value) > MAX_SYSTEM_PROMPT:
            raise CliError(f"{where}: tutor {tutor}: system_prompt is longer than {MAX_SYSTEM_PROMPT} characters")
    if "voice" in entry and "tts_model" not in entry:
        raise CliError(f"{where}: tutor {tutor} names a voice but no tts_model to speak it")
    return dict(entry)
