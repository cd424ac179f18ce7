"""Webhook signatures: a good call once, and every way a call is refused (401)."""

import pytest

from runtime.jobs.webhooks import WebhookRefused, WebhookVerifier, sign

SECRET = b"s3cret"
NOW = 1_800_000_000


def test_a_signed_call_is_accepted_once():
    verifier = WebhookVerifier(SECRET, window_s=300)
    body = b'{"ref": "main"}'
    signature = sign(SECRET, NOW - 10, body)
    verifier.verify(str(NOW - 10), signature, body, now=NOW)
    with pytest.raises(WebhookRefused, match="already accepted"):
        verifier.verify(str(NOW - 10), signature, body, now=NOW + 5)
    assert WebhookRefused.status == 401


@pytest.mark.parametrize(("timestamp", "signature", "body", "message"), [
    (None, sign(SECRET, NOW, b"x"), b"x", "missing X-Flowctl-Timestamp header"),
    (str(NOW), None, b"x", "missing X-Flowctl-Signature header"),
    ("yesterday", "sha256=00", b"x", "X-Flowctl-Timestamp must be Unix seconds, got 'yesterday'"),
    (str(NOW - 301), sign(SECRET, NOW - 301, b"x"), b"x", r"is \+301 s from now; the replay window is ±300 s"),
    (str(NOW), sign(SECRET, NOW, b"x"), b"y", "X-Flowctl-Signature does not match the body"),
    (str(NOW), sign(b"other", NOW, b"x"), b"x", "does not match"),
    (str(NOW), sign(SECRET, NOW - 1, b"x"), b"x", "does not match"),  # the timestamp is signed too
])
def test_refusals_say_why(timestamp, signature, body, message):
    with pytest.raises(WebhookRefused, match=message):
        WebhookVerifier(SECRET).verify(timestamp, signature, body, now=NOW)
