"""Limits shared by several planes, kept in Redis (`flowctl serve --redis URL`): a LimitBackend.

Each decision is one Lua script (ADMIT, runtime/dispatch/redis_scripts.py) that checks every
subject (the key and its tenant) and only then writes, so planes admitting the same key at once
never overshoot. A request costs one Redis call: `admit_slot` takes its concurrency slot and
counts it against rpm/tpm in the same script, so a request refused by a rate never holds a slot,
not even for a moment another plane could see. The slot's release and the reply's token charge
ride on the next call (or the background flush); a key with no limits costs no call at all.

`take_slot` and `check` remain, as the same script over only the slot or only the rates, for
callers that take the slot before they know whether the request is one: the gateway when the
body is still arriving (a slow upload holds a slot; its rates are checked once the body names a
model, so a 400 or 404 spends no rpm), a session's turn (one slot for several calls, each
checked), a batch job's line. Those pay two calls; runtime/dispatch/dispatcher.py says who uses which.

Concurrency slots are leases: a sorted set of slot ids scored by expiry, renewed every third of
`slot_lease` while the request runs. A plane that dies mid-request stops renewing and its slots
expire, so nothing leaks. When Redis is unreachable the limiter fails closed: 503
limiter_unavailable naming Redis (never a 500, never unlimited admission), and it recovers by
itself once Redis answers again. Keys are grouped by tenant in a hash tag ({tenant}), so a Redis
Cluster keeps the key and tenant subjects of a request on one shard.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Sequence
from typing import Any

import trio

from runtime.dispatch.limits import (
    Limits,
    Principal,
    burst_for,
    concurrency_refused,
    rate_refused,
    tokens_refused,
)
from runtime.dispatch.redis_scripts import SCRIPTS, Script
from runtime.dispatch.resp import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
    Arg,
    RedisReplyError,
    RedisUnavailable,
    RespClient,
)
from runtime.gateway.errors import GatewayError

log = logging.getLogger("flowctl.limits")
DEFAULT_SLOT_LEASE = 30.0  # seconds a dead plane's concurrency slot stays counted
DOWN_RETRY = 0.25  # after Redis failed, requests are refused this long without trying it again
FLUSH_RETRY = 1.0  # token charges that could not be written are tried again this often
# Releases and charges wait this long for a decision to ride on before they get a round trip of
# their own: under load most ride along; another plane sees a release at most this much later.
FLUSH_DELAY = 0.005
SHUTDOWN_WAIT = 2.0  # at shutdown, requests still running get this long to give their slots back
PREFIX = "flowctl:limits"

Command = tuple[Script | None, Sequence[Arg], Sequence[Arg]]  # (script or None: a plain command, keys, args)


def _tag(tenant: str) -> str:
    return "{" + tenant.replace("{", "").replace("}", "") + "}"


def _subjects(who: Principal) -> tuple[tuple[str, str, Limits], ...]:
    """(kind, subject, limits) of the key and of its tenant."""
    return (("key", f"key:{who.key_id}", who.key_limits), ("tenant", f"tenant:{who.tenant}", who.tenant_limits))


class RedisLimiter:
    """rpm (GCRA), tpm and concurrency per key and tenant, in Redis shared by every plane."""

    def __init__(self, url: str, *, slot_lease: float = DEFAULT_SLOT_LEASE, timeout: float = DEFAULT_TIMEOUT,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        if not slot_lease > 0:
            raise ValueError(f"slot_lease={slot_lease!r} is not a positive number of seconds")
        self.client = RespClient(url, timeout=timeout, max_connections=max_connections)
        self.slot_lease = slot_lease
        self.round_trips = 0  # calls to Redis (a pipeline is one): for the bench and the docs' figures
        self._held: dict[str, tuple[str, ...]] = {}  # slot id -> its sets, renewed while held
        self._releases: list[tuple[str, tuple[str, ...]]] = []
        self._charges: dict[tuple[tuple[str, int], ...], int] = {}  # ((bucket, tpm), ...) -> tokens
        self._wake = trio.Event()
        self._down_until = -math.inf
        self._down_reason = ""

    def _key(self, who: Principal, kind: str, subject: str) -> str:
        return f"{PREFIX}:{_tag(who.tenant)}:{kind}:{subject}"

    # -- LimitBackend ---------------------------------------------------------------------

    async def take_slot(self, who: Principal) -> object:
        """Take a concurrency slot of the key and the tenant (429 when either is full, 503 without Redis)."""
        return await self._admit(who, slot=True, rates=False)

    def give_slot(self, who: Principal, slot: object) -> None:
        """Give the slot back (written with the next Redis call, or by the background flush)."""
        if isinstance(slot, str) and (keys := self._held.pop(slot, None)) is not None:
            self._releases.append((slot, keys))
            self._wake.set()

    async def check(self, who: Principal) -> None:
        """Count a request against the key's and the tenant's rpm and tpm, all or nothing, in one script."""
        await self._admit(who, slot=False, rates=True)

    async def admit_slot(self, who: Principal) -> object:
        """`take_slot` and `check` in one script call: the slot is taken only if the rates allow the request."""
        return await self._admit(who, slot=True, rates=True)

    async def _admit(self, who: Principal, *, slot: bool, rates: bool) -> object:
        """The ADMIT script over the subjects' slot sets (if `slot`) and rates (if `rates`); the slot id or None."""
        subjects = _subjects(who)
        sets = [(kind, self._key(who, "c", subject), limits.max_concurrency)
                for kind, subject, limits in subjects if slot and limits.max_concurrency is not None]
        buckets = [(kind, self._key(who, "t", subject), limits.tpm)
                   for kind, subject, limits in subjects if rates and limits.tpm is not None]
        gcras = [(kind, self._key(who, "r", subject), limits.rpm)
                 for kind, subject, limits in subjects if rates and limits.rpm is not None]
        if not sets and not buckets and not gcras:
            return None
        slot_id = secrets.token_hex(8) if sets else ""
        slot_keys = tuple(key for _, key, _ in sets)
        args: list[Arg] = [slot_id, int(self.slot_lease * 1000), len(sets), len(buckets),
                           *(int(limit) for _, _, limit in sets), *(tpm for _, _, tpm in buckets)]
        for _, _, rpm in gcras:
            interval = 60000.0 / rpm
            args += [repr(interval), repr(interval * (burst_for(rpm) - 1))]
        keys = [*slot_keys, *(key for _, key, _ in buckets), *(key for _, key, _ in gcras)]
        done = False
        try:
            index, wait_ms = await self._decide(SCRIPTS["admit"], keys, args)
            done = True
        finally:
            if not done and sets:  # cancelled or failed after Redis may have taken it: give it back
                self._releases.append((slot_id, slot_keys))
        index, wait = int(index), float(wait_ms) / 1000.0
        if index == 0:
            if not sets:
                return None
            self._held[slot_id] = slot_keys
            return slot_id
        if index <= len(sets):
            kind, _, limit = sets[index - 1]
            raise concurrency_refused(kind, limit)
        index -= len(sets)
        if index <= len(buckets):
            kind, _, tpm = buckets[index - 1]
            raise tokens_refused(kind, tpm, wait)
        kind, _, rpm = gcras[index - 1 - len(buckets)]
        raise rate_refused(kind, rpm, wait)

    def charge(self, who: Principal, tokens: int) -> None:
        """Take `tokens` from the tpm buckets (written with the next Redis call, or by the background flush)."""
        if tokens <= 0:
            return
        buckets = tuple((self._key(who, "t", subject), limits.tpm)
                        for _, subject, limits in _subjects(who) if limits.tpm is not None)
        if buckets:
            self._charges[buckets] = self._charges.get(buckets, 0) + tokens
            self._wake.set()

    # -- the background: renewals and the flush of releases and charges ----------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew held slots and flush releases and charges until cancelled (then flush once more)."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._renew_loop)
                nursery.start_soon(self._flush_loop)
                task_status.started()
                try:
                    await self.client.execute("PING")
                    log.info("limits: shared through Redis at %s", self.client.address)
                except (RedisUnavailable, RedisReplyError) as exc:  # the plane serves; limited keys get 503
                    log.warning("limits: %s; requests of keys with limits are refused (503) until it answers", exc)
        finally:
            with trio.CancelScope(shield=True):
                await self._last_flush()
                await self.client.aclose()

    async def _last_flush(self) -> None:
        """At shutdown: write what is pending, and the slots of requests ending meanwhile (cancelled with
        the plane), for up to SHUTDOWN_WAIT; what is left expires with its lease on the other planes."""
        with trio.move_on_after(SHUTDOWN_WAIT):
            while True:
                try:
                    await self._flush()
                except RedisUnavailable as exc:
                    log.warning("limits: releases and charges not written at shutdown: %s", exc)
                    return
                if not self._held:
                    return
                await trio.sleep(FLUSH_DELAY)
        if self._held:
            log.warning("limits: %d concurrency slots still held at shutdown; they expire within %g s",
                        len(self._held), self.slot_lease)

    async def _renew_loop(self) -> None:
        lease_ms = int(self.slot_lease * 1000)
        while True:
            await trio.sleep(self.slot_lease / 3)
            commands: list[Command] = [(SCRIPTS["renew"], keys, [slot, lease_ms]) for slot, keys in self._held.items()]
            if commands:
                try:
                    await self._pipeline(commands)
                except RedisUnavailable as exc:
                    log.warning("limits: could not renew %d concurrency slots: %s", len(commands), exc)

    async def _flush_loop(self) -> None:
        while True:
            with trio.move_on_after(FLUSH_RETRY):
                await self._wake.wait()
                await trio.sleep(FLUSH_DELAY)
            self._wake = trio.Event()
            try:
                await self._flush()
            except RedisUnavailable as exc:
                log.debug("limits: flush failed: %s", exc)

    async def _flush(self) -> None:
        pending = self._take_pending()
        if pending:
            await self._pipeline(pending)

    def _take_pending(self) -> list[Command]:
        """Releases and charges not yet written; the charges come back if writing them fails."""
        commands: list[Command] = [(None, keys, [slot]) for slot, keys in self._releases]
        self._releases = []
        for buckets, tokens in self._charges.items():
            args: list[Arg] = []
            for _, tpm in buckets:
                args += [tpm, tokens]
            commands.append((SCRIPTS["charge"], [key for key, _ in buckets], args))
        self._charges = {}
        return commands

    # -- talking to Redis -------------------------------------------------------------------

    async def _decide(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """One decision script, after whatever releases and charges are pending (in the same round trip,
        so a request right after another's end sees its slot free and its tokens charged)."""
        now = trio.current_time()
        if now < self._down_until:
            raise self._unavailable(self._down_reason)
        try:
            replies = await self._pipeline([*self._take_pending(), (script, keys, args)])
        except RedisUnavailable as exc:
            self._down_until, self._down_reason = trio.current_time() + DOWN_RETRY, str(exc)
            raise self._unavailable(str(exc)) from None
        reply = replies[-1]
        if isinstance(reply, RedisReplyError):
            raise self._unavailable(f"Redis at {self.client.address} answered {reply}")
        return reply

    def _unavailable(self, reason: str) -> GatewayError:
        return GatewayError(503, f"rate limits cannot be checked: {reason}; retry shortly", "limiter_unavailable",
                            retry_after=1)

    async def _pipeline(self, commands: list[Command]) -> list[Any]:
        """Send the commands in one round trip (scripts by EVALSHA, loaded again after NOSCRIPT).

        Charges that fail are kept for the next flush; releases that fail are dropped (their
        slots expire with their lease)."""
        try:
            replies = await self._send(commands)
            if any(isinstance(r, RedisReplyError) and str(r).startswith("NOSCRIPT") for r in replies):
                await self._load_scripts()  # Redis restarted or flushed its script cache
                again = [i for i, r in enumerate(replies) if isinstance(r, RedisReplyError)]
                for i, reply in zip(again, await self._send([commands[i] for i in again]), strict=True):
                    replies[i] = reply
        except BaseException:  # unreachable, or cancelled: a charge is better written twice than never
            self._keep_charges(commands)
            raise
        return replies

    async def _send(self, commands: list[Command]) -> list[Any]:
        raw: list[list[Arg]] = []
        for script, keys, args in commands:
            if script is None:  # a release: ZREM of the slot from each of its sets
                raw += [["ZREM", key, args[0]] for key in keys]
            else:
                raw.append(["EVALSHA", script.sha, len(keys), *keys, *args])
        self.round_trips += 1
        replies = await self.client.pipeline(raw)
        out: list[Any] = []
        index = 0
        for script, keys, _ in commands:
            if script is None:
                out.append(replies[index:index + len(keys)])
                index += len(keys)
            else:
                out.append(replies[index])
                index += 1
        return out

    async def _load_scripts(self) -> None:
        self.round_trips += 1
        for reply in await self.client.pipeline([["SCRIPT", "LOAD", s.source] for s in SCRIPTS.values()]):
            if isinstance(reply, RedisReplyError):
                raise RedisUnavailable(f"Redis at {self.client.address} refused a limiter script: {reply}")

    def _keep_charges(self, commands: list[Command]) -> None:
        for script, keys, args in commands:
            if script is SCRIPTS["charge"]:
                buckets = tuple((str(key), int(args[2 * i])) for i, key in enumerate(keys))
                self._charges[buckets] = self._charges.get(buckets, 0) + int(args[1])
