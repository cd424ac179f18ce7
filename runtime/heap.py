"""The cyclic garbage collector in a plane that holds large long-lived caches and fires bursts.

Measured with bench/jobs.py (10,000 cron jobs, 200 fires/s in bursts at each whole second):
CPython's full collections walked the plane's whole heap every 3 s, 250-470 ms each, the event
loop standing still meanwhile (that was the lateness p99), and found nothing to free. Two causes:

- The job cache (every definition with its parsed trigger, the planner's heap): hundreds of
  thousands of objects as old as the plane. `freeze_long_lived` after such a cache is built
  moves what is alive then into the permanent generation (`gc.freeze`), which collections
  skip. Frozen objects are still freed by reference counting when dropped; only a cycle among
  them is never collected, so it is called after building a large cache, not per request.
- A burst allocates faster than CPython's default young threshold (700) collects: a run's
  objects, alive for the ~100 ms it takes, were promoted into the old generation, making its
  collections frequent. `tune_collector` collects the young generation every YOUNG_THRESHOLD
  allocations instead, so they die young (young collections stay a few ms).

Together: full collections once a minute or less, under 50 ms; plane CPU 33% -> 21% of a core.
"""

from __future__ import annotations

import gc

LARGE = 1000  # a cache rebuilt with at least this many entries is worth freezing after
YOUNG_THRESHOLD = 50_000  # allocations between young collections (CPython's default: 700)
OLDER_THRESHOLDS = (20, 100)  # young collections per middle one, middle ones per full one


def freeze_long_lived(entries: int) -> bool:
    """After building a cache of `entries` long-lived entries: freeze the heap if it is LARGE."""
    if entries < LARGE:
        return False
    gc.freeze()
    return True


def tune_collector() -> None:
    """Collect the young generation every YOUNG_THRESHOLD allocations (process-wide, idempotent)."""
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
