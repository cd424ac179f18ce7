"""Batches of job messages: packed in order within their bounds, a lone entry as itself, and
unpacked entry by entry (a bad entry refused alone, naming its attempt; a bad batch refused whole)."""

import json

import msgspec

from runtime.control import job_batches
from runtime.control.job_batches import (
    MAX_ENTRIES,
    pack_attempts,
    pack_reports,
    unpack_attempts,
    unpack_reports,
)
from runtime.control.messages import (
    JobAttempt,
    JobAttempts,
    JobReport,
    JobReports,
    decode_node_message,
    decode_plane_message,
    encode,
)


def attempt(n, *, epoch=1, command=("true",)):
    return JobAttempt(run_id=f"run_{n}", tenant="default", job="j", step="s", attempt=1, epoch=epoch,
                      service_id="echo", version="1.0.0", command=command)


def test_attempts_round_trip_in_order_through_the_wire():
    sent = [attempt(n) for n in range(5)]
    (message,) = pack_attempts(sent)
    received = decode_plane_message(encode(message))
    assert isinstance(received, JobAttempts)
    assert unpack_attempts(received) == (sent, [])


def test_reports_round_trip_and_a_lone_entry_goes_as_itself():
    reports = [JobReport(f"run_{n}", "s", 1, 1, "succeeded", exit_code=0) for n in range(3)]
    (message,) = pack_reports(reports)
    assert unpack_reports(decode_node_message(encode(message))) == (reports, [])
    assert pack_reports(reports[:1]) == reports[:1] and pack_attempts([attempt(0)]) == [attempt(0)]


def test_a_batch_is_split_at_its_entry_and_byte_bounds(monkeypatch):
    many = [attempt(n) for n in range(MAX_ENTRIES * 2 + 1)]
    packed = pack_attempts(many)
    assert [type(m) for m in packed] == [JobAttempts, JobAttempts, JobAttempt]
    assert [a for m in packed[:2] for a in unpack_attempts(m)[0]] + packed[2:] == many
    monkeypatch.setattr(job_batches, "MAX_BATCH_BYTES", 3000)
    big = [attempt(n, command=("x" * 1000,)) for n in range(5)]
    packed = pack_attempts(big)
    assert all(len(encode(m)) < 3200 for m in packed) and len(packed) == 3
    assert [a for m in packed for a in (unpack_attempts(m)[0] if isinstance(m, JobAttempts) else [m])] == big


def _batch(entries):
    return decode_plane_message(json.dumps({"type": "job_attempts", "attempts": entries}))


def test_a_bad_entry_is_refused_alone_naming_its_attempt():
    good = [msgspec.to_builtins(attempt(n)) for n in range(3)]
    bad = {**good[1], "command": "not a list"}
    nameless = {"type": "job_attempt", "step": "s"}
    attempts, refused = unpack_attempts(_batch([good[0], bad, good[2], nameless, 7]))
    assert [a.run_id for a in attempts] == ["run_0", "run_2"]
    assert [(r.index, r.key, r.epoch) for r in refused] == [(1, ("run_1", "s", 1, None), 1), (3, None, 0), (4, None, 0)]
    assert refused[0].reason.startswith("job_attempts entry 1 is invalid: Expected `array`, got `str`")


def test_a_batch_that_is_not_a_list_or_too_long_is_refused_whole():
    too_many = [msgspec.to_builtins(attempt(0))] * (MAX_ENTRIES + 1)
    for entries, why in (("nope", "must be a JSON array"), ({"a": 1}, "must be a JSON array"),
                         (too_many, f"of {MAX_ENTRIES + 1} entries exceeds")):
        attempts, refused = unpack_attempts(_batch(entries))
        assert attempts == [] and len(refused) == 1 and why in refused[0].reason, refused
    attempts, refused = unpack_attempts(decode_plane_message('{"type": "job_attempts"}'))  # no entries at all
    assert attempts == [] and "must be a JSON array" in refused[0].reason
    reports, refused = unpack_reports(decode_node_message('{"type": "job_reports", "reports": 3}'))
    assert reports == [] and refused[0].reason.startswith("a job_reports batch must be a JSON array")
    assert isinstance(decode_node_message('{"type": "job_reports", "reports": []}'), JobReports)
