"""Per key and per tenant limits: requests/minute (GCRA), tokens/minute, concurrent requests.

A request takes a concurrency slot (`enter`) and is checked against the rates (`admit`),
both at once when its body is already there, else the slot before the body is read and the
rates once the body names a model; `release` gives the slot back.

GCRA keeps one "theoretical arrival time" per subject: requests are spaced by
60/rpm seconds on average, with a burst of up to `burst` back to back; nothing
resets on a minute boundary. Tokens use a bucket that refills at tpm/60 per second
and is charged after the fact (the worker reports usage; a stream is charged as it
goes), so it may run negative: the next request then waits until it is positive.
All times come from trio.current_time(), so tests drive them with autojump_clock.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Protocol

import trio

from runtime.gateway.errors import GatewayError


@dataclass(frozen=True)
class Limits:
    """The limits of one key or one tenant (None: unlimited)."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    max_sessions: int | None = None  # realtime sessions open at once (a tenant's setting)


@dataclass(frozen=True)
class Principal:
    """Who a request comes from, as its key says: never taken from the request body."""

    tenant: str
    key_id: str
    key_limits: Limits = field(default_factory=Limits)
    tenant_limits: Limits = field(default_factory=Limits)
    models: tuple[str, ...] = ()  # fnmatch patterns; empty: every model

    def allows(self, model: str) -> bool:
        """Whether the key's allow-list covers `model`."""
        return not self.models or any(fnmatch.fnmatchcase(model, p) for p in self.models)


def burst_for(rpm: int) -> int:
    """Back-to-back requests allowed: a tenth of a minute's worth, at least one."""
    return max(1, rpm // 10)


class LimitBackend(Protocol):
    """Where the limits' state lives: this process (`Limiter`, the default) or Redis, shared by
    several planes (runtime/dispatch/redis_limits.py). The dispatcher only speaks this."""

    async def take_slot(self, who: Principal) -> object:
        """Take one of the key's and the tenant's concurrent-request slots or raise 429; then `give_slot`."""
        ...

    def give_slot(self, who: Principal, slot: object) -> None:
        """Give back what `take_slot` returned (synchronous: it runs also when the caller was cancelled)."""
        ...

    async def check(self, who: Principal) -> None:
        """Count a request against the rpm/tpm limits or raise 429 (with Retry-After), nothing counted."""
        ...

    async def admit_slot(self, who: Principal) -> object:
        """`take_slot` and `check` as one step (one Redis call), nothing taken or counted on refusal."""
        ...

    def charge(self, who: Principal, tokens: int) -> None:
        """Take `tokens` from the key's and the tenant's tokens/minute buckets."""
        ...


def concurrency_refused(kind: str, limit: int) -> GatewayError:
    """The 429 of a request past the key's or tenant's max_concurrency."""
    return GatewayError(429, f"too many concurrent requests for this {kind} (limit {limit})",
                        "concurrency_limit_exceeded", retry_after=1)


def tokens_refused(kind: str, tpm: int, wait: float) -> GatewayError:
    """The 429 of a request while the tokens/minute bucket is empty (`wait` seconds until it is not)."""
    return GatewayError(429, f"token rate limit of this {kind} reached ({tpm} tokens/min)", "tokens_limit_exceeded",
                        retry_after=wait)


def rate_refused(kind: str, rpm: int, wait: float) -> GatewayError:
    """The 429 of a request past the requests/minute limit (`wait` seconds until the next may pass)."""
    return GatewayError(429, f"request rate limit of this {kind} reached ({rpm} requests/min)",
                        "rate_limit_exceeded", retry_after=wait)


class Limiter:
    """The state of every subject's limits ("key:ID" and "tenant:NAME") in this process (a LimitBackend)."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._tokens: dict[str, tuple[float, float]] = {}  # subject -> (level, at)
        self.active: dict[str, int] = {}

    def _gcra(self, subject: str, rpm: int, now: float) -> float:
        """0 if a request may pass now (and it is counted), else the seconds to wait."""
        interval = 60.0 / rpm
        tolerance = interval * (burst_for(rpm) - 1)
        tat = max(self._tat.get(subject, now), now)
        wait = tat - tolerance - now
        if wait > 1e-9:
            return wait
        self._tat[subject] = tat + interval
        return 0.0

    def _token_level(self, subject: str, tpm: int, now: float) -> float:
        level, at = self._tokens.get(subject, (float(tpm), now))
        return min(float(tpm), level + (now - at) * tpm / 60.0)

    def enter(self, who: Principal) -> None:
        """Take one of the key's and the tenant's concurrent-request slots or raise 429; then `release`.

        Taken before the request's body is read, so a slow upload holds a slot too.
        """
        subjects = _subjects(who)
        for subject, limits, kind in subjects:
            if limits.max_concurrency is not None and self.active.get(subject, 0) >= limits.max_concurrency:
                raise concurrency_refused(kind, limits.max_concurrency)
        for subject, _, _ in subjects:
            self.active[subject] = self.active.get(subject, 0) + 1

    def admit(self, who: Principal) -> None:
        """Count a request (holding a slot from `enter`) against the rate limits or raise 429 (with Retry-After)."""
        now = trio.current_time()
        subjects = _subjects(who)
        for subject, limits, kind in subjects:
            if limits.tpm is not None:
                level = self._token_level(subject, limits.tpm, now)
                if level <= 0:
                    raise tokens_refused(kind, limits.tpm, (1 - level) * 60.0 / limits.tpm)
        for subject, limits, kind in subjects:
            if limits.rpm is not None:
                wait = self._peek_gcra(subject, limits.rpm, now)
                if wait:
                    raise rate_refused(kind, limits.rpm, wait)
        for subject, limits, _ in subjects:
            if limits.rpm is not None:
                self._gcra(subject, limits.rpm, now)

    async def take_slot(self, who: Principal) -> object:
        """`enter`, as LimitBackend says."""
        self.enter(who)
        return None

    def give_slot(self, who: Principal, slot: object) -> None:
        """`release`, as LimitBackend says."""
        self.release(who)

    async def check(self, who: Principal) -> None:
        """`admit`, as LimitBackend says."""
        self.admit(who)

    async def admit_slot(self, who: Principal) -> object:
        """`enter` then `admit`, the slot given back if a rate refuses (no await between: nobody sees it)."""
        self.enter(who)
        try:
            self.admit(who)
        except GatewayError:
            self.release(who)
            raise
        return None

    def _peek_gcra(self, subject: str, rpm: int, now: float) -> float:
        interval = 60.0 / rpm
        tat = max(self._tat.get(subject, now), now)
        wait = tat - interval * (burst_for(rpm) - 1) - now
        return wait if wait > 1e-9 else 0.0

    def release(self, who: Principal) -> None:
        """The request that took a slot with `enter` has ended."""
        for subject in (f"key:{who.key_id}", f"tenant:{who.tenant}"):
            left = self.active.get(subject, 1) - 1
            if left > 0:
                self.active[subject] = left
            else:
                self.active.pop(subject, None)

    def charge(self, who: Principal, tokens: int) -> None:
        """Take `tokens` from the key's and the tenant's tokens/minute buckets."""
        if tokens <= 0:
            return
        now = trio.current_time()
        for subject, limits in ((f"key:{who.key_id}", who.key_limits), (f"tenant:{who.tenant}", who.tenant_limits)):
            if limits.tpm is not None:
                self._tokens[subject] = (self._token_level(subject, limits.tpm, now) - tokens, now)


def _subjects(who: Principal) -> tuple[tuple[str, Limits, str], ...]:
    return ((f"key:{who.key_id}", who.key_limits, "key"), (f"tenant:{who.tenant}", who.tenant_limits, "tenant"))
