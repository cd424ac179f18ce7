"""Which worker log tails a heartbeat carries: those changed since the last one, within a budget."""

from __future__ import annotations

import logging

import trio

from runtime.control import messages

log = logging.getLogger("flowctl.node")
# Worker log characters per heartbeat: even escaped six-fold in JSON it stays under MAX_MESSAGE_BYTES.
MAX_LOG_CHARS = 128 * 1024


async def changed_tails(executor: object, sent: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The worker log tails that changed since `sent` (updated), within MAX_LOG_REPLICAS and MAX_LOG_CHARS."""
    tails = getattr(executor, "log_tails", None)  # an executor without worker logs sends none
    if tails is None:
        return {}
    try:
        now: dict[str, tuple[str, ...]] = await trio.to_thread.run_sync(tails)
    except OSError as error:
        log.warning("cannot read worker logs: %s", error)
        return {}
    for gone in set(sent) - set(now):
        del sent[gone]
    changed: dict[str, tuple[str, ...]] = {}
    budget = MAX_LOG_CHARS  # the rest waits for the next heartbeat
    for replica_id, lines in now.items():
        size = sum(len(line) for line in lines)
        if sent.get(replica_id) == lines or size > budget or len(changed) >= messages.MAX_LOG_REPLICAS:
            continue
        budget -= size
        changed[replica_id] = lines
    sent.update(changed)
    return changed
