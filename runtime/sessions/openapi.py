"""The realtime session API's part of the plane's OpenAPI description (runtime/sessions/routes.py).

Each path is served twice: flowctl's /v1/sessions and seed 002's /mgmt/v1/sessions;
the WebSocket at /ws/sessions/{id} and the seed's /ws/ws/{id}. OpenAPI has no
WebSocket operation, so the sockets are described as the GET that upgrades, with
the messages in its description (docs/sessions.md has them in full).
"""

from __future__ import annotations

from typing import Any

API_KEY: list[dict[str, list[str]]] = [{"bearer": []}]
_STR = {"type": "string"}
_NULLABLE_STR = {"type": "string", "nullable": True}
_SEED_ID = {"description": "seed 002's field, kept in metadata and echoed at the top level"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/SessionError"}}}}


SCHEMAS: dict[str, Any] = {
    "SessionError": {"type": "object", "required": ["detail"], "properties": {
        "detail": {"type": "string"}, "error": {"type": "object", "properties": {
            "message": _STR, "type": _STR, "code": {"type": "integer"}}}},
        "description": "seed 002's {\"detail\"}, plus an OpenAI-style error object"},
    "Session": {"type": "object", "properties": {
        "session_id": _STR, "status": {"type": "string", "enum": ["active", "closed"]}, "model": _STR,
        "asr_model": _NULLABLE_STR, "tts_model": _NULLABLE_STR, "voice": _NULLABLE_STR,
        "stream": {"type": "boolean"}, "pipeline": {"type": "object", "description": (
            "each stage (asr, llm, tts) of the session: its model and the replica and node it is pinned to")},
        "metadata": {"type": "object"},
        "created_at": _STR, "last_activity": _STR, "node_id": _NULLABLE_STR, "replica_id": _NULLABLE_STR,
        "history_tokens": {"type": "integer"}, "tutor_id": _SEED_ID, "student_id": _SEED_ID, "kb_id": _SEED_ID,
        "tenant": {"type": "string", "description": "in the admin key's listing only"}}},
}
SESSION_CREATED = {"allOf": [{"$ref": "#/components/schemas/Session"}, {"type": "object", "properties": {
    "engine_url": {"type": "string", "description": "where to open the WebSocket (add ?token=ENGINE_TOKEN); "
                                                   "--public-ws-url, or a trusted proxy's X-Forwarded-*"},
    "engine_token": {"type": "string", "description": "the WebSocket's token, shown only here"},
    "warnings": {"type": "array", "items": _STR, "description": "an ASR or TTS model of the pipeline with no "
                                                                  "ready replica now (audio turns get an error)"}}}]}
_CREATE_IN = {"type": "object", "properties": {
    "model": {"type": "string", "description": "the chat model; absent: the tutor's (--tutors), else "
                                               "--default-model, else the only ready one"},
    "asr_model": {"type": "string", "description": "speech to text for audio messages (else the tutor's)"},
    "tts_model": {"type": "string", "description": "text to speech for audio replies (else the tutor's)"},
    "voice": {"type": "string", "description": "the TTS voice (else the tutor's, else the model's default)"},
    "stream": {"type": "boolean", "default": True, "description": "text_delta messages, and audio sentence by "
                                                                  "sentence while the LLM generates"},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 32768},
    "system_prompt": {"type": "string", "maxLength": 32000},
    "metadata": {"type": "object"}, "tutor_id": _SEED_ID, "student_id": _SEED_ID, "kb_id": _SEED_ID},
    "example": {"tutor_id": 1, "student_id": 1, "kb_id": "test-kb"}}
_AUTH_ERRORS = {"401": _error("no API key, or a wrong one (unless the plane runs --anonymous-tenant)"),
                "403": _error("the key may not do this")}
_ID = [{"name": "session_id", "in": "path", "required": True, "schema": _STR}]
_SOCKET = """Upgrade to the session's WebSocket with `?token=ENGINE_TOKEN` (403 before the upgrade for a wrong \
id or token, 429 when the session has its most sockets open).

Client messages: `{"type": "text", "content": "..."}`, `{"type": "audio", "data": BASE64, "format": "wav"}`, \
`{"type": "cancel"}`.
Server messages (each with `timestamp` and `utterance_id`): `transcription` (what the audio said), `text_delta` \
(`delta`: the reply as it streams), `text` (`content`: the whole reply, `role`, `done`: true, as seed 002 sends \
it), `audio` (`content`: the sentence spoken, `data`: base64 of a whole WAV, 16-bit mono, `sample_rate` 22050 for \
piper's Joe voice), `error` (`content`, and `code`/`retry_after` for a limit)."""


def _socket(summary: str) -> dict[str, Any]:
    return {"get": {"summary": summary, "description": _SOCKET, "parameters": [
        *_ID, {"name": "token", "in": "query", "required": True, "schema": _STR,
               "description": "the engine_token of the create reply"}],
        "responses": {"101": {"description": "switched to the WebSocket protocol"},
                      "403": _error("unknown session or wrong engine token"),
                      "429": _error("too many WebSockets open on this session")}}}


def _crud(seed: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    note = " (seed 002's path)" if seed else ""
    sessions: dict[str, Any] = {
        "post": {"summary": f"Open a realtime session{note}", "security": API_KEY,
                 "requestBody": {"required": True, "content": {"application/json": {"schema": _CREATE_IN}}},
                 "responses": {"201": {"description": "the session, its engine_url and engine_token",
                                       "content": {"application/json": {"schema": SESSION_CREATED}}},
                               "400": _error("a bad body, an unknown tutor_id, the tutor's LLM not ready, "
                                             "or no model named and none chosen by default"),
                               **_AUTH_ERRORS, "404": _error("no ready replica serves the model"),
                               "413": _error("metadata too large"),
                               "429": _error("the key's rate or the tenant's session limit"),
                               "503": _error("the plane has its --max-sessions open")}},
        "get": {"summary": f"The caller's tenant's sessions; every tenant's with the admin key{note}",
                "security": [*API_KEY, {"adminKey": []}],
                "responses": {"200": {"description": "the sessions, with active_sessions and max_sessions",
                                      "content": {"application/json": {"schema": {"type": "object", "properties": {
                                          "object": _STR, "data": {"type": "array", "items": {
                                              "$ref": "#/components/schemas/Session"}},
                                          "active_sessions": {"type": "integer"},
                                          "max_sessions": {"type": "integer"}}}}}},
                              **_AUTH_ERRORS}},
    }
    one: dict[str, Any] = {
        "get": {"summary": f"One session (404 for another tenant's){note}", "security": API_KEY,
                "parameters": _ID,
                "responses": {"200": {"description": "the session", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Session"}}}},
                    **_AUTH_ERRORS, "404": _error("no such session")}},
        "delete": {"summary": f"Close a session: its WebSocket is told why and closed{note}", "security": API_KEY,
                   "parameters": _ID, "responses": {"204": {"description": "closed"}, **_AUTH_ERRORS,
                                                    "404": _error("no such session")}},
    }
    return sessions, one


_SESSIONS, _ONE = _crud(seed=False)
_SEED_SESSIONS, _SEED_ONE = _crud(seed=True)
PATHS: dict[str, Any] = {
    "/v1/sessions": _SESSIONS,
    "/v1/sessions/{session_id}": _ONE,
    "/mgmt/v1/sessions": _SEED_SESSIONS,
    "/mgmt/v1/sessions/{session_id}": _SEED_ONE,
    "/ws/sessions/{session_id}": _socket("A session's WebSocket (realtime conversation)"),
    "/ws/ws/{session_id}": _socket("A session's WebSocket at seed 002's path"),
}
