"""The gateway's part of OpenAI's audio API: upload limits and the model named in a multipart form.

`/v1/audio/transcriptions` and `/v1/audio/translations` take `multipart/form-data` (the audio
`file`, `model`, `language`, `prompt`, `response_format`, `temperature`); `/v1/audio/speech`
takes JSON and answers with audio, streamed. The gateway reads only `model` to route; the form
is forwarded byte for byte to the replica, which checks the rest. Audio seconds for usage come
from the replica's reply headers (runtime/dispatch/usage.py).
"""

from __future__ import annotations

import re

from runtime.gateway.errors import GatewayError

AUDIO_UPLOADS = frozenset({"/v1/audio/transcriptions", "/v1/audio/translations"})
# OpenAI's 25 MB file limit, plus room for the form's other fields and boundaries.
DEFAULT_MAX_AUDIO_BODY = (25 << 20) + (64 << 10)
MAX_MODEL_FIELD = 256
# A transcription's first byte is its whole answer: allow the time a long file takes on a CPU.
AUDIO_FIRST_BYTE_TIMEOUT = 600.0
_BOUNDARY = re.compile(r'boundary=(?:"([^"]{1,70})"|([^";\s]{1,70}))', re.IGNORECASE)
_NAME = re.compile(rb'[;\s]name="([^"]*)"', re.IGNORECASE)


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, code, param=param)


def multipart_model(raw: bytes, content_type: str) -> str:
    """The text of the form field `model` of a multipart/form-data body (a 400 names what is wrong)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise _bad("send the audio as multipart/form-data (fields 'file' and 'model')", code="invalid_content_type")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise _bad("the multipart/form-data body has no boundary in its Content-Type", code="invalid_body")
    delimiter = b"--" + (match.group(1) or match.group(2)).encode("latin-1")
    if not raw.startswith(delimiter) and delimiter not in raw:
        raise _bad("the body is not the multipart/form-data its Content-Type announces", code="invalid_body")
    # Parts are separated by CRLF + delimiter; the first may start the body without the CRLF.
    for part in (b"\r\n" + raw).split(b"\r\n" + delimiter)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        disposition = next((line for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-disposition:")), b"")
        name = _NAME.search(disposition)
        if name is None or name.group(1) != b"model":
            continue
        if len(value) > MAX_MODEL_FIELD:
            raise _bad("'model' is not a valid model id", "model", "invalid_model")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("'model' is not valid UTF-8", "model", "invalid_model") from None
    raise _bad("'model' is required (a field of the multipart form)", "model", "missing_model")
