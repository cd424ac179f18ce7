import json
import re

import pytest

from runtime.control.messages import (
    MAX_LOG_LINE,
    MAX_LOG_LINES,
    MAX_LOG_REPLICAS,
    REPLACED,
    Assign,
    Assignment,
    Error,
    Heartbeat,
    Hello,
    ProtocolError,
    ReplicaReport,
    Status,
    Welcome,
    decode_node_message,
    decode_plane_message,
    encode,
)


def test_messages_round_trip():
    hello = Hello(node_id="n1", name="desk", agent_version="0.1.0", cpu_count=2, ram_mb=24000)
    assert decode_node_message(encode(hello)) == hello
    status = Status(ReplicaReport("r1", "echo", "1.0.0", attempt=3, state="ready", models=("echo",)))
    assert decode_node_message(encode(status)) == status
    assign = Assign(generation=7, replicas=(Assignment("r1", "echo", "1.0.0", 3),))
    assert decode_plane_message(encode(assign)) == assign


def test_welcome_credential_and_error_code_are_optional_fields():
    welcome = Welcome(node_id="n1", cluster_id="c", heartbeat_interval_s=5, hub_url="http://h", credential="fnc_x")
    assert decode_plane_message(encode(welcome)) == welcome
    # An older plane's welcome (no credential) and error (no code) still decode.
    old = decode_plane_message('{"type": "welcome", "node_id": "n1", "cluster_id": "c", '
                               '"heartbeat_interval_s": 5, "hub_url": "http://h"}')
    assert old.credential == ""
    assert decode_plane_message('{"type": "error", "message": "no", "fatal": true}') == Error("no", fatal=True)
    replaced = Error("replaced by a newer connection", fatal=True, code=REPLACED)
    assert decode_plane_message(encode(replaced)).code == "replaced"


def test_unknown_fields_are_ignored_for_forward_compatibility():
    beat = decode_node_message('{"type": "heartbeat", "seq": 1, "free_ram_mb": 5, "gpu_temp": 40}')
    assert beat == Heartbeat(seq=1, free_ram_mb=5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ('{"type": "reboot"}', "invalid control message"),
        ('{"type": "heartbeat", "seq": "one", "free_ram_mb": 1}', "Expected `int`, got `str`"),
        ('{"seq": 1}', "invalid control message"),
        ('{"type": "status", "replica": {"replica_id": "r", "service_id": "s", "version": "1.0.0",'
         ' "attempt": 1, "state": "dancing"}}', "invalid control message"),
        ("x" * (1024 * 1024 + 1), "exceeds"),
    ],
)
def test_bad_messages_are_protocol_errors(text, message):
    with pytest.raises(ProtocolError, match=message):
        decode_node_message(text)


def test_a_node_cannot_send_plane_messages():
    with pytest.raises(ProtocolError):
        decode_node_message(encode(Assign(generation=1)))


def _hello_with(labels) -> str:
    return json.dumps({"type": "hello", "node_id": "n", "name": "n", "agent_version": "0", "cpu_count": 1,
                       "ram_mb": 1, "labels": labels})


def test_a_hello_carries_its_labels_and_an_old_node_has_none():
    hello = decode_node_message(_hello_with({"gpu": "a100", "topology.kubernetes.io/zone": "eu-1", "spot": ""}))
    assert hello.labels == {"gpu": "a100", "topology.kubernetes.io/zone": "eu-1", "spot": ""}
    old = {"type": "hello", "node_id": "n", "name": "n", "agent_version": "0", "cpu_count": 1, "ram_mb": 1}
    assert decode_node_message(json.dumps(old)).labels == {}


@pytest.mark.parametrize("labels, where", [
    ({"gpu": "<script>"}, "$.labels"),
    ({"": "x"}, "$.labels"),
    ({"-gpu": "x"}, "$.labels"),
    ({"g" * 64: "x"}, "$.labels"),
    ({"gpu": "a" * 64}, "$.labels"),
    ({f"k{i}": "v" for i in range(33)}, "length <= 32"),
    ({"gpu": 1}, "$.labels"),
    (["gpu=a100"], "$.labels"),
])
def test_hostile_labels_are_refused_naming_the_field(labels, where):
    with pytest.raises(ProtocolError, match=re.escape(where)):
        decode_node_message(_hello_with(labels))


def test_a_heartbeat_carries_worker_log_tails_and_an_old_one_has_none():
    old = decode_node_message(json.dumps({"type": "heartbeat", "seq": 1, "free_ram_mb": 5}))
    assert old.logs == {}
    beat = decode_node_message(encode(Heartbeat(seq=2, free_ram_mb=5, logs={"r1": ("a", "<b>")})))
    assert beat.logs == {"r1": ("a", "<b>")}


@pytest.mark.parametrize("logs, where", [
    ({"r1": ["x" * (MAX_LOG_LINE + 1)]}, "$.logs"),
    ({"r1": ["x"] * (MAX_LOG_LINES + 1)}, "$.logs"),
    ({f"r{i}": [] for i in range(MAX_LOG_REPLICAS + 1)}, "$.logs"),
    ({"r1": "not a list"}, "$.logs"),
])
def test_oversized_worker_log_tails_are_refused_naming_the_field(logs, where):
    with pytest.raises(ProtocolError, match=re.escape(where)):
        decode_node_message(json.dumps({"type": "heartbeat", "seq": 1, "free_ram_mb": 5, "logs": logs}))
