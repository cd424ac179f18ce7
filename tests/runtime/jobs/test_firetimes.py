"""Fire times: cron in a timezone across DST changes, intervals, once, and misfire look-back."""

import datetime as dt
from zoneinfo import ZoneInfo

from runtime.jobs.firetimes import fires_between, last_fires, next_fire
from runtime.jobs.model import CronTrigger, IntervalTrigger, ManualTrigger, OnceTrigger

BERLIN = ZoneInfo("Europe/Berlin")


def _utc(*args) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp())


def _local(t: int) -> str:
    return dt.datetime.fromtimestamp(t, BERLIN).isoformat()


def test_a_0230_berlin_job_runs_once_on_the_spring_forward_day_at_the_end_of_the_gap():
    fires = list(fires_between(CronTrigger("30 2 * * *", "Europe/Berlin"), _utc(2026, 3, 28), _utc(2026, 3, 31)))
    assert [_local(t) for t in fires] == [
        "2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]


def test_a_0230_berlin_job_runs_once_on_the_fall_back_day_at_the_first_occurrence():
    for cron in ("30 2 * * *", "0 30 2 * * *"):
        fires = list(fires_between(CronTrigger(cron, "Europe/Berlin"), _utc(2026, 10, 24), _utc(2026, 10, 27)))
        assert [_local(t) for t in fires] == [
            "2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_asking_from_inside_the_repeated_hour_does_not_fire_it_again():
    second_pass = _utc(2026, 10, 25, 1, 10)  # 02:10 CET, after the 02:30 CEST fire
    assert _local(next_fire(CronTrigger("30 2 * * *", "Europe/Berlin"), second_pass)) == "2026-10-26T02:30:00+01:00"


def test_times_in_one_gap_fire_once():
    fires = list(fires_between(CronTrigger("0,30 2 * * *", "Europe/Berlin"), _utc(2026, 3, 28, 12), _utc(2026, 3, 30)))
    assert [_local(t) for t in fires] == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"]


def test_elapsed_time_expressions_follow_real_instants():
    half_hourly = CronTrigger("*/30 * * * *", "Europe/Berlin")
    fall = list(fires_between(half_hourly, _utc(2026, 10, 24, 23, 59), _utc(2026, 10, 25, 2)))
    assert [t - fall[0] for t in fall] == [i * 1800 for i in range(5)]  # both passes of 02:xx
    spring = list(fires_between(half_hourly, _utc(2026, 3, 28, 23, 59), _utc(2026, 3, 29, 2)))
    assert [_local(t)[11:16] for t in spring] == ["01:00", "01:30", "03:00", "03:30", "04:00"]


def test_six_fields_have_seconds_first():
    assert next_fire(CronTrigger("*/10 * * * * *"), _utc(2027, 1, 1, 0, 0, 3)) == _utc(2027, 1, 1, 0, 0, 10)


def test_interval_once_and_untimed():
    every = IntervalTrigger(900, start_at=_utc(2027, 1, 1))
    assert next_fire(every, 0) == _utc(2027, 1, 1)
    assert next_fire(every, _utc(2027, 1, 1)) == _utc(2027, 1, 1, 0, 15)
    assert next_fire(every, _utc(2027, 1, 1, 0, 14, 59)) == _utc(2027, 1, 1, 0, 15)
    assert next_fire(OnceTrigger(100), 99) == 100 and next_fire(OnceTrigger(100), 100) is None
    assert next_fire(ManualTrigger(), 0) is None


def test_last_fires_finds_the_latest_without_walking_a_long_outage():
    per_second = CronTrigger("* * * * * *")
    start, end = _utc(2026, 1, 1), _utc(2026, 1, 8)  # a week: 604,800 fires
    assert last_fires(per_second, start, end, 3) == [end - 2, end - 1, end]
    daily = CronTrigger("0 4 * * *")
    assert last_fires(daily, start, end, 2) == [_utc(2026, 1, 6, 4), _utc(2026, 1, 7, 4)]
    assert last_fires(daily, start, _utc(2026, 1, 1, 5), 5) == [_utc(2026, 1, 1, 4)]
    assert last_fires(daily, start, end, 0) == []
