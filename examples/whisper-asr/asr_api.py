"""The OpenAI audio API's fields and reply formats: json, text, verbose_json, srt, vtt."""

from __future__ import annotations

import json
from typing import Any

from asr_engine import Options, Transcript

FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
MAX_PROMPT_CHARS = 4000


class ApiError(Exception):
    """A request the worker refuses, with an HTTP status and an OpenAI error body."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict[str, Any]:
        """OpenAI's error shape."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def invalid(param: str, message: str) -> ApiError:
    """A 400 for one bad form field."""
    return ApiError(400, message, code="invalid_value", param=param)


def parse_options(form: dict[str, str], *, task: str, languages: frozenset[str]) -> tuple[Options, str]:
    """The transcription options and the response format from the form's text fields."""
    response_format = form.get("response_format") or "json"
    if response_format not in FORMATS:
        raise invalid("response_format", f"'response_format' must be one of {', '.join(FORMATS)}, "
                      f"not {response_format!r}")
    language = form.get("language") or None
    if language is not None and language not in languages:
        raise invalid("language", f"'language' must be an ISO-639-1 code Whisper knows (en, fr, de, ...), "
                      f"not {language!r}")
    prompt = form.get("prompt") or None
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise invalid("prompt", f"'prompt' is longer than {MAX_PROMPT_CHARS} characters")
    raw = form.get("temperature")
    temperature = 0.0
    if raw not in (None, ""):
        try:
            temperature = float(raw)
        except ValueError:
            raise invalid("temperature", f"'temperature' must be a number, not {raw!r}") from None
        if not 0.0 <= temperature <= 1.0:
            raise invalid("temperature", f"'temperature' must be between 0 and 1, not {raw}")
    stream = (form.get("stream") or "false").lower()
    if stream not in ("false", "0"):
        raise invalid("stream", "streamed transcription is not supported by this model; leave 'stream' out")
    words = "word" in form.get("timestamp_granularities[]", "")
    return Options(task=task, language=language, prompt=prompt, temperature=temperature,
                   word_timestamps=words and response_format == "verbose_json"), response_format


def _usage(transcript: Transcript) -> dict[str, Any]:
    return {"type": "duration", "seconds": round(transcript.duration, 3)}


def render(transcript: Transcript, response_format: str) -> tuple[str, str]:
    """(body, content type) of the reply in `response_format`."""
    if response_format == "json":
        return json.dumps({"text": transcript.text, "usage": _usage(transcript)}), "application/json"
    if response_format == "text":
        return transcript.text + "\n", "text/plain; charset=utf-8"
    if response_format == "srt":
        return _subtitles(transcript, ",", srt=True), "text/plain; charset=utf-8"
    if response_format == "vtt":
        return "WEBVTT\n\n" + _subtitles(transcript, ".", srt=False), "text/plain; charset=utf-8"
    body: dict[str, Any] = {
        "task": transcript.task, "language": transcript.language,
        "duration": round(transcript.duration, 3), "text": transcript.text,
        "segments": [_segment(i, s) for i, s in enumerate(transcript.segments)], "usage": _usage(transcript)}
    words = [w for s in transcript.segments for w in (getattr(s, "words", None) or [])]
    if words:
        body["words"] = [{"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
                         for w in words]
    return json.dumps(body), "application/json"


def _segment(index: int, s: Any) -> dict[str, Any]:
    return {"id": index, "seek": s.seek, "start": round(s.start, 3), "end": round(s.end, 3),
            "text": s.text, "tokens": list(s.tokens), "temperature": s.temperature,
            "avg_logprob": s.avg_logprob, "compression_ratio": s.compression_ratio,
            "no_speech_prob": s.no_speech_prob}


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms:03d}"


def _subtitles(transcript: Transcript, sep: str, *, srt: bool) -> str:
    cues = []
    for number, s in enumerate(transcript.segments, 1):
        head = f"{number}\n" if srt else ""
        cues.append(f"{head}{_stamp(s.start, sep)} --> {_stamp(s.end, sep)}\n{s.text.strip()}\n")
    return "\n".join(cues)
