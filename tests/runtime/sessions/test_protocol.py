import json

from runtime.sessions.protocol import server_message


def test_a_lone_surrogate_from_the_model_goes_out_escaped():
    text = server_message("text_delta", "u1", delta="ok \ud800", role="assistant")
    text.encode()  # a WebSocket text frame must be UTF-8
    assert json.loads(text)["delta"] == "ok \ud800"


def test_valid_unicode_goes_out_as_is():
    text = server_message("text", "u1", content="héllo 🌍")
    assert "héllo 🌍" in text and json.loads(text)["content"] == "héllo 🌍"
