"""The Lua scripts of the Redis limiter: each checks every subject and then writes, in one call.

A script runs atomically in Redis, so two planes admitting the same key at the same instant are
ordered by Redis and the second sees the first's write: never a read on one round trip and a
write on another (LiteLLM's multi-instance limiter counted after admitting, and overshot).
Times come from Redis (TIME, in milliseconds), so the planes' clocks do not matter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
"""

# KEYS: slot sets; ARGV: slot id, lease ms. Pushes the slot's expiry while its request runs
# (XX: a slot already released or purged is not brought back).
RENEW = _NOW + """
local lease = tonumber(ARGV[2])
for i = 1, #KEYS do
  if redis.call('ZADD', KEYS[i], 'XX', 'CH', now + lease, ARGV[1]) == 1 then
    redis.call('PEXPIRE', KEYS[i], math.ceil(lease) + 1000)
  end
end
return 0
"""

# The admission of a request: a concurrency slot and its rates, checked together and written only
# once all allow it. KEYS: the slot sets (m of them), the token buckets (n), then the GCRA keys.
# ARGV: slot id, lease ms, m, n, the limit of each slot set, the tpm of each bucket, then
# (interval ms, tolerance ms) of each GCRA key. Returns {0, '0'} once the request holds its slot
# and is counted, else {index of the refusing key, wait in ms} with nothing counted (expired slots,
# of planes that died mid-request and stopped renewing, are purged first: that changes no count).
# Any of the three groups may be empty: a slot alone, or the rates alone, is the same script.
ADMIT = _NOW + """
local lease, m, n = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, m do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[4 + i]) then return {i, '0'} end
end
for i = m + 1, m + n do
  local tpm = tonumber(ARGV[4 + i])
  local v = redis.call('HMGET', KEYS[i], 'l', 'a')
  local level = tpm
  if v[1] then level = math.min(tpm, tonumber(v[1]) + (now - tonumber(v[2])) * tpm / 60000) end
  if level <= 0 then return {i, tostring((1 - level) * 60000 / tpm)} end
end
local tats = {}
for i = m + n + 1, #KEYS do
  local j = 5 + m + n + (i - m - n - 1) * 2
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local wait = tat - tonumber(ARGV[j + 1]) - now
  if wait > 0.001 then return {i, tostring(wait)} end
  tats[i] = tat + tonumber(ARGV[j])
end
for i = m + n + 1, #KEYS do
  redis.call('SET', KEYS[i], tostring(tats[i]), 'PX', math.ceil(tats[i] - now) + 1000)
end
for i = 1, m do
  redis.call('ZADD', KEYS[i], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], math.ceil(lease) + 1000)
end
return {0, '0'}
"""

# KEYS: token buckets; ARGV: (tpm, tokens) per key. Refill and subtract in one step; the level may
# go negative (a reply larger than the budget), and the next ADMIT then waits until it is positive.
CHARGE = _NOW + """
for i = 1, #KEYS do
  local tpm, tokens = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local v = redis.call('HMGET', KEYS[i], 'l', 'a')
  local level = tpm
  if v[1] then level = math.min(tpm, tonumber(v[1]) + (now - tonumber(v[2])) * tpm / 60000) end
  level = level - tokens
  redis.call('HSET', KEYS[i], 'l', tostring(level), 'a', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((tpm - level) * 60000 / tpm) + 1000)
end
return 0
"""


@dataclass(frozen=True)
class Script:
    """A Lua script and its SHA-1 (what EVALSHA names it by)."""

    name: str
    source: str

    @property
    def sha(self) -> str:
        """The SHA-1 Redis knows the script by once loaded."""
        return hashlib.sha1(self.source.encode()).hexdigest()  # Redis names scripts by SHA-1


SCRIPTS = {s.name: s for s in (Script("admit", ADMIT), Script("renew", RENEW), Script("charge", CHARGE))}
