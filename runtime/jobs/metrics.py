"""The job engine's numbers in Prometheus text: runs by final state, fire lateness, queue
depth, step attempt durations. The plane's /metrics will append `render()` (not wired yet)."""

from __future__ import annotations

from collections import defaultdict

LATENESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0)
DURATION_BUCKETS = (0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts: dict[str, list[float]] = {}  # label value -> per-bucket counts, count, sum

    def observe(self, key: str, value: float) -> None:
        row = self.counts.get(key)
        if row is None:
            row = self.counts[key] = [0.0] * (len(self.buckets) + 2)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                row[i] += 1
                break
        row[-2] += 1
        row[-1] += value

    def render(self, name: str, label: str) -> list[str]:
        out = []
        for key, row in sorted(self.counts.items()):
            cumulative = 0.0
            for bound, n in zip(self.buckets, row, strict=False):
                cumulative += n
                out.append(f'{name}_bucket{{{label}="{_escape(key)}",le="{bound!r}"}} {int(cumulative)}')
            out.append(f'{name}_bucket{{{label}="{_escape(key)}",le="+Inf"}} {int(row[-2])}')
            out.append(f'{name}_count{{{label}="{_escape(key)}"}} {int(row[-2])}')
            out.append(f'{name}_sum{{{label}="{_escape(key)}"}} {row[-1]:.6f}')
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class JobMetrics:
    """Counters and histograms the engine updates; `render()` is their /metrics text."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], int] = defaultdict(int)  # (tenant, final state) -> runs
        self.queue_depth = 0  # runs due and not yet started, at the last pass
        self._lateness = _Histogram(LATENESS_BUCKETS)  # by tenant
        self._durations = _Histogram(DURATION_BUCKETS)  # by final attempt state

    def run_finished(self, tenant: str, state: str) -> None:
        """A run ended (succeeded, failed, timed_out, cancelled, skipped)."""
        self.runs[(tenant, state)] += 1

    def run_started(self, tenant: str, lateness_s: float) -> None:
        """A run started `lateness_s` after it was due."""
        self._lateness.observe(tenant, max(0.0, lateness_s))

    def attempt_finished(self, state: str, seconds: float) -> None:
        """A step attempt ended in `state` after `seconds`."""
        self._durations.observe(state, seconds)

    def render(self) -> str:
        """The Prometheus text exposition."""
        out = ["# HELP flowctl_jobs_runs_total Runs that ended, by tenant and state.",
               "# TYPE flowctl_jobs_runs_total counter"]
        out += [f'flowctl_jobs_runs_total{{tenant="{_escape(t)}",state="{s}"}} {n}'
                for (t, s), n in sorted(self.runs.items())]
        out += ["# HELP flowctl_jobs_fire_lateness_seconds Run start minus its due time, by tenant.",
                "# TYPE flowctl_jobs_fire_lateness_seconds histogram"]
        out += self._lateness.render("flowctl_jobs_fire_lateness_seconds", "tenant")
        out += ["# HELP flowctl_jobs_queue_depth Runs due and not yet started at the last pass.",
                "# TYPE flowctl_jobs_queue_depth gauge", f"flowctl_jobs_queue_depth {self.queue_depth}"]
        out += ["# HELP flowctl_jobs_attempt_seconds Step attempt durations, by final state.",
                "# TYPE flowctl_jobs_attempt_seconds histogram"]
        out += self._durations.render("flowctl_jobs_attempt_seconds", "state")
        return "\n".join(out) + "\n"
