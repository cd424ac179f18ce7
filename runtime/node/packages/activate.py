"""Switching `current` and pruning old versions, under the per-service lock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from packer.semver import parse_version
from runtime.node.packages import fsutil
from runtime.node.packages.errors import NotInstalled
from runtime.node.packages.layout import NodeLayout
from runtime.node.packages.lock import hold_lock


@dataclass(frozen=True)
class ActivateResult:
    """What a switch did: whether `current` moved, from where, which versions were pruned."""

    changed: bool
    previous: str | None
    removed: tuple[str, ...]


async def activate(layout: NodeLayout, service: str, version: str, *, keep: int = 0,
                   check: Callable[[str | None], None] | None = None) -> ActivateResult:
    """Point `current` at an installed `version` (atomically), then keep the newest `keep`.

    `check(current)` runs under the lock before the swap and may raise to refuse it;
    `keep=0` prunes nothing. The current and the previous version are never pruned.
    """
    async with hold_lock(layout.service_lock(service)):
        if not (layout.version_dir(service, version) / "service.json").is_file():
            raise NotInstalled(service, version)
        previous = layout.current_version(service)
        if check is not None:
            check(previous)
        await trio.to_thread.run_sync(_sweep_link_temps, layout, service)
        changed = previous != version
        if changed:
            await trio.to_thread.run_sync(fsutil.swap_symlink, layout.current_link(service),
                                          version)
        removed = await trio.to_thread.run_sync(_prune, layout, service, keep, {version, previous})
    return ActivateResult(changed, previous, tuple(removed))


def _sweep_link_temps(layout: NodeLayout, service: str) -> None:
    # A kill between creating the temp symlink and renaming it leaves one behind.
    for temp in layout.service_dir(service).glob(f".{layout.current_link(service).name}-tmp-*"):
        temp.unlink(missing_ok=True)


def _prune(layout: NodeLayout, service: str, keep: int, protected: set[str | None]) -> list[str]:
    if keep <= 0:
        return []
    versions = sorted(layout.installed_versions(service), key=parse_version, reverse=True)
    removed = []
    for v in versions[keep:]:
        if v not in protected:
            remove_version_tree(layout, service, v)
            removed.append(v)
    return removed


def remove_version_tree(layout: NodeLayout, service: str, version: str) -> None:
    """Remove an installed tree: first renamed to a staging name, so a crash leaves no half tree."""
    src = layout.version_dir(service, version)
    doomed = layout.new_staging_dir(service, version)
    src.rename(doomed)
    fsutil.fsync_dir(src.parent)
    fsutil.remove_tree(doomed)
