"""Webhook triggers' signatures: HMAC-SHA256 over the timestamp and the body, a replay window,
and each signature accepted once.

A sender computes `sha256=` + hex(HMAC-SHA256(secret, TIMESTAMP + "." + BODY)) and sends it
in `X-Flowctl-Signature`, with TIMESTAMP (Unix seconds) in `X-Flowctl-Timestamp`. The
endpoint that checks it, `POST /api/v1/hooks/TENANT/NAME` (routes.py), answers
`WebhookRefused` with its status, 401.
"""

from __future__ import annotations

import hashlib
import hmac

from runtime.jobs.errors import JobError

SIGNATURE_HEADER = "X-Flowctl-Signature"
TIMESTAMP_HEADER = "X-Flowctl-Timestamp"
DEFAULT_WINDOW_S = 300


class WebhookRefused(JobError):
    """A webhook call is unsigned, badly signed, outside the replay window, or a replay."""

    status = 401


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookVerifier:
    """Checks signed webhook calls for one secret, remembering signatures for the window."""

    def __init__(self, secret: bytes, *, window_s: int = DEFAULT_WINDOW_S):
        self._secret, self.window_s = secret, window_s
        self._seen: dict[str, float] = {}  # signature -> when it may be forgotten

    def verify(self, timestamp: str | None, signature: str | None, body: bytes, *, now: float) -> None:
        """Accept the call or raise WebhookRefused saying why."""
        if not timestamp or not signature:
            missing = TIMESTAMP_HEADER if not timestamp else SIGNATURE_HEADER
            raise WebhookRefused(f"missing {missing} header")
        if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
            raise WebhookRefused(f"{TIMESTAMP_HEADER} must be Unix seconds, got {timestamp[:40]!r}")
        sent = int(timestamp)
        if abs(now - sent) > self.window_s:
            raise WebhookRefused(f"{TIMESTAMP_HEADER} is {now - sent:+.0f} s from now; "
                                 f"the replay window is ±{self.window_s} s")
        if not hmac.compare_digest(sign(self._secret, sent, body).encode(), signature.encode("utf-8", "replace")):
            raise WebhookRefused(f"{SIGNATURE_HEADER} does not match the body")
        self._seen = {s: until for s, until in self._seen.items() if until > now}
        if signature in self._seen:
            raise WebhookRefused("this signed call was already accepted (a replay)")
        self._seen[signature] = sent + self.window_s
