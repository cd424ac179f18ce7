"""Prometheus text for the gateway: requests, latency, tokens, rate-limit rejections."""

from __future__ import annotations

from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(**values: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in values.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters and histograms kept in memory; `render()` is the /metrics body."""

    def __init__(self) -> None:
        # Keyed by (model, tenant, status | kind, via): via is http, session or job.
        self.requests: dict[tuple[str, str, str, str], int] = defaultdict(int)
        self.tokens: dict[tuple[str, str, str, str], int] = defaultdict(int)
        self.rejections: dict[tuple[str, str], int] = defaultdict(int)
        self.audio_seconds: dict[tuple[str, str, str], float] = defaultdict(float)
        self.retries = 0
        self.upstream_failures = 0
        self._hist: dict[tuple[str, str], list[float]] = {}

    def observe(self, model: str, tenant: str, status: int, seconds: float, *, via: str = "http") -> None:
        """One finished request."""
        self.requests[(model, tenant, str(status), via)] += 1
        hist = self._hist.get((model, tenant))
        if hist is None:
            hist = self._hist[(model, tenant)] = [0.0] * (len(BUCKETS) + 2)
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                hist[i] += 1
                break
        hist[-2] += 1
        hist[-1] += seconds

    def count_tokens(self, model: str, tenant: str, prompt: int, completion: int, *, via: str = "http") -> None:
        """Tokens the worker reported (or that a stream relayed)."""
        self.tokens[(model, tenant, "prompt", via)] += prompt
        self.tokens[(model, tenant, "completion", via)] += completion

    def count_audio(self, model: str, tenant: str, seconds: float, *, via: str = "http") -> None:
        """Seconds of audio an ASR model heard or a TTS model spoke."""
        self.audio_seconds[(model, tenant, via)] += seconds

    def reject(self, tenant: str, limit: str) -> None:
        """A request refused by a limit (rpm, tpm or concurrency)."""
        self.rejections[(tenant, limit)] += 1

    def render(self) -> str:
        """The Prometheus text exposition."""
        out = ["# HELP flowctl_gateway_requests_total Model calls answered, by model, tenant, status and "
               "via (http, session, job).", "# TYPE flowctl_gateway_requests_total counter"]
        for (model, tenant, status, via), n in sorted(self.requests.items()):
            labels = _labels(model=model, tenant=tenant, status=status, via=via)
            out.append(f"flowctl_gateway_requests_total{labels} {n}")
        out += ["# HELP flowctl_gateway_request_seconds Time to the end of the response.",
                "# TYPE flowctl_gateway_request_seconds histogram"]
        for (model, tenant), hist in sorted(self._hist.items()):
            cumulative = 0.0
            for bound, in_bucket in zip(BUCKETS, hist, strict=False):
                cumulative += in_bucket
                le = _labels(model=model, tenant=tenant, le=repr(bound))
                out.append(f"flowctl_gateway_request_seconds_bucket{le} {int(cumulative)}")
            inf = _labels(model=model, tenant=tenant, le="+Inf")
            out.append(f"flowctl_gateway_request_seconds_bucket{inf} {int(hist[-2])}")
            base = _labels(model=model, tenant=tenant)
            out.append(f"flowctl_gateway_request_seconds_count{base} {int(hist[-2])}")
            out.append(f"flowctl_gateway_request_seconds_sum{base} {hist[-1]:.6f}")
        out += ["# HELP flowctl_gateway_tokens_total Tokens by model, tenant, kind (prompt, completion) and via.",
                "# TYPE flowctl_gateway_tokens_total counter"]
        for (model, tenant, kind, via), n in sorted(self.tokens.items()):
            out.append(f"flowctl_gateway_tokens_total{_labels(model=model, tenant=tenant, kind=kind, via=via)} {n}")
        out += ["# HELP flowctl_gateway_audio_seconds_total Seconds of audio transcribed (asr) or spoken "
                "(tts), by model, tenant and via.", "# TYPE flowctl_gateway_audio_seconds_total counter"]
        for (model, tenant, via), seconds in sorted(self.audio_seconds.items()):
            out.append(f"flowctl_gateway_audio_seconds_total{_labels(model=model, tenant=tenant, via=via)} "
                       f"{seconds:.3f}")
        out += ["# HELP flowctl_gateway_rate_limited_total Requests refused by a limit.",
                "# TYPE flowctl_gateway_rate_limited_total counter"]
        for (tenant, limit), n in sorted(self.rejections.items()):
            out.append(f"flowctl_gateway_rate_limited_total{_labels(tenant=tenant, limit=limit)} {n}")
        out += ["# HELP flowctl_gateway_retries_total Requests retried on another replica.",
                "# TYPE flowctl_gateway_retries_total counter", f"flowctl_gateway_retries_total {self.retries}"]
        out += ["# HELP flowctl_gateway_upstream_failures_total Replies cut short: the replica failed or "
                "went silent mid-reply.", "# TYPE flowctl_gateway_upstream_failures_total counter",
                f"flowctl_gateway_upstream_failures_total {self.upstream_failures}"]
        return "\n".join(out) + "\n"
