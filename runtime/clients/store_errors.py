"""A blob store's refusal as one safe line (no httpx here: the sync jobs client uses it too)."""

from __future__ import annotations

import re

_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_MESSAGE = re.compile(r"<Message>([^<]{1,200})</Message>")


def store_refusal(status: int, body: str) -> str:
    """What a blob store's error says, in one line: S3's Code and Message only.

    Never the URL (it carries the signature) nor the rest of the body (S3 echoes the access key
    id and the string it signed in some errors).
    """
    text = body[:4000]
    code, message = _CODE.search(text), _MESSAGE.search(text)
    what = ": ".join(m.group(1).strip() for m in (code, message) if m is not None)
    return f"the blob store answered HTTP {status}" + (f" ({what})" if what else "")
