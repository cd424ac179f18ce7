"""When a timed trigger fires: the next fire times after an instant, DST included.

Fire times are whole epoch seconds (UTC). Cron expressions are evaluated by cronsim in the
trigger's timezone with Debian cron's DST rule:

- An expression with a fixed minute and hour (neither field starts with `*`, e.g.
  `30 2 * * *`) follows the wall clock. A local time that does not exist (skipped by a
  spring-forward change) fires at the first instant after the gap (02:30 Europe/Berlin on
  the last Sunday of March fires at 03:00 CEST); a local time that occurs twice (fall-back)
  fires once, at its first occurrence (02:30 CEST, the summer-time one). So such a job runs
  exactly once on each of those days; several times mapped into one gap fire once.
- Any other expression (`*/15 * * * *`, `0 * * * *`) follows elapsed time: it fires at every
  real instant that matches, so an hourly job runs twice in the repeated hour and not in the
  skipped one, and its spacing never stretches.

A 6-field expression has seconds first (`*/10 * * * * *`).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from runtime.jobs.model import CronTrigger, IntervalTrigger, OnceTrigger, Trigger

UTC = dt.UTC
MAX_LOOKBACK_S = 400 * 86400  # misfire scans never look further back than this


def cron_problem(expr: str) -> str | None:
    """What is wrong with a cron expression, or None."""
    fields = expr.split()
    if len(fields) not in (5, 6):
        return f"{expr!r} has {len(fields)} fields; expected 5 (minute first) or 6 (second first)"
    try:
        it = CronSim(expr, dt.datetime(2000, 1, 1))
        next(it)
    except CronSimError as e:
        return f"{expr!r}: {str(e).lower() or 'invalid'} field"
    except StopIteration:
        return f"{expr!r} never fires"
    return None


def timezone_problem(name: str) -> str | None:
    """What is wrong with a timezone name, or None."""
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown timezone {name!r}"
    return None


@functools.lru_cache(maxsize=512)
def _zone(name: str) -> dt.tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


def next_fire(trigger: Trigger, after: int) -> int | None:
    """The first fire time strictly after `after` (epoch seconds), or None (never again)."""
    if isinstance(trigger, IntervalTrigger):
        if after < trigger.start_at:
            return trigger.start_at
        return trigger.start_at + ((after - trigger.start_at) // trigger.every + 1) * trigger.every
    if isinstance(trigger, OnceTrigger):
        return trigger.at if trigger.at > after else None
    if isinstance(trigger, CronTrigger):
        return _next_cron(trigger, after)
    return None  # manual, webhook, event: fired by a call, never by the clock


def fires_between(trigger: Trigger, after: int, until: int) -> Iterator[int]:
    """Every fire time in (after, until], in order."""
    t = next_fire(trigger, after)
    while t is not None and t <= until:
        yield t
        t = next_fire(trigger, t)


def last_fires(trigger: Trigger, after: int, until: int, n: int) -> list[int]:
    """The latest `n` fire times in (after, until], oldest first, without scanning them all.

    A plane that was down for a week must not walk a per-second schedule from the start of
    the outage, so the look-back window grows tenfold until it holds `n` fires.
    """
    after = max(after, until - MAX_LOOKBACK_S)
    span = 60
    while True:
        start = max(after, until - span)
        found = list(fires_between(trigger, start, until))
        if len(found) >= n or start == after:
            return found[-n:] if n else []
        span *= 10


def _next_cron(trigger: CronTrigger, after: int) -> int | None:
    zone = _zone(trigger.timezone)
    fields = trigger.cron.split()
    minute, hour = (fields[0], fields[1]) if len(fields) == 5 else (fields[1], fields[2])
    try:
        if zone is UTC or minute.startswith("*") or hour.startswith("*"):
            # Elapsed time: cronsim steps through real instants (it ticks in UTC).
            start = dt.datetime.fromtimestamp(after, zone)
            return int(next(CronSim(trigger.cron, start)).timestamp())
        # Wall clock: iterate naive local times and map each to one instant.
        local = dt.datetime.fromtimestamp(after, zone).replace(tzinfo=None)
        for naive in CronSim(trigger.cron, local):
            instant = _instant_of(naive, zone)
            if instant > after:
                return instant
            if naive > local + dt.timedelta(days=2):  # cannot happen; guards the loop
                return None
    except StopIteration:
        return None
    return None


def _instant_of(naive: dt.datetime, zone: dt.tzinfo) -> int:
    """The instant a wall-clock time names: the first occurrence, or the end of a DST gap."""
    first = naive.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive:
        return int(first.timestamp())
    # Nonexistent: fold=1 maps it before the gap and fold=0 after; the gap's end lies between.
    lo, hi = int(naive.replace(tzinfo=zone, fold=1).timestamp()), int(first.timestamp())
    lo, hi = min(lo, hi), max(lo, hi)
    while lo < hi:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid + 1
    return lo
