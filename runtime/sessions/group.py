"""The utterance group: one session's pipeline stages (ASR, LLM, TTS) pinned to replicas together.

Every utterance of a session goes to the same replica per stage, for the session's life, so
caches stay warm and the load of a session stays where it was placed. The first placement puts
the whole group on one node when the plane can (the node serving most of the pipeline, all
three stages preferred), so audio does not travel between machines. When one stage's replica
is gone, that stage alone is re-pinned, to the group's node if another replica is there; the
other stages keep theirs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from runtime.dispatch import Pin
from runtime.scheduler.service import Route

STAGES = ("asr", "llm", "tts")
RoutesOf = Callable[[str], list[Route]]
LoadOf = Callable[[Route], float]


@dataclass
class UtteranceGroup:
    """The replica each stage of a session's pipeline is pinned to."""

    pins: dict[str, Pin] = field(default_factory=dict)  # stage -> its pin

    def node(self, *, besides: str | None = None) -> str | None:
        """The group's node: where most of its other stages are pinned (the LLM's breaks a tie)."""
        nodes = Counter(p.node_id for s, p in self.pins.items() if s != besides and p.node_id and p.replica_id)
        if not nodes:
            return None
        most = max(nodes.values())
        llm = self.pins.get("llm")
        if llm is not None and llm.node_id and nodes.get(llm.node_id) == most and besides != "llm":
            return llm.node_id
        return sorted(n for n, c in nodes.items() if c == most)[0]

    def unpin(self, stage: str) -> None:
        """Forget a stage's replica (it failed): the next call chooses again."""
        pin = self.pins.get(stage)
        if pin is not None:
            pin.replica_id = pin.node_id = None

    def place(self, stage: str, models: Mapping[str, str], routes_of: RoutesOf, load: LoadOf) -> Pin:
        """The pin for `stage`, kept while its replica is ready, else chosen (see the module docstring).

        `models` maps each stage of the pipeline to its model. With no ready replica the pin is
        left as it is: the dispatcher then answers 404 or 503 for the model.
        """
        pin = self.pins.setdefault(stage, Pin())
        routes = routes_of(models[stage])
        if not routes or pin.replica_id in {r.replica.replica_id for r in routes}:
            return pin
        home = self.node(besides=stage)
        if home is None:
            home = _best_node(stage, models, routes, routes_of, load)
        candidates = [r for r in routes if r.node_id == home] or routes
        best = min(candidates, key=lambda r: (load(r), r.replica.replica_id))
        pin.replica_id, pin.node_id = best.replica.replica_id, best.node_id
        return pin

    def to_json(self, models: Mapping[str, str]) -> dict[str, dict[str, str | None]]:
        """Each stage's model and where it is pinned, for the session API."""
        out: dict[str, dict[str, str | None]] = {}
        for stage in STAGES:
            if stage in models:
                pin = self.pins.get(stage) or Pin()
                out[stage] = {"model": models[stage], "replica_id": pin.replica_id, "node_id": pin.node_id}
        return out


def _best_node(stage: str, models: Mapping[str, str], routes: list[Route], routes_of: RoutesOf,
               load: LoadOf) -> str:
    """Of the nodes serving `stage`, the one that serves most of the pipeline, then the least loaded."""
    served: Counter[str] = Counter()
    busy: dict[str, float] = {}
    for other, model in models.items():
        found = routes if other == stage else routes_of(model)
        for route in found:
            busy[route.node_id] = busy.get(route.node_id, 0.0) + load(route)
        served.update({r.node_id for r in found})
    nodes = {r.node_id for r in routes}
    return min(nodes, key=lambda n: (-served[n], busy.get(n, 0.0), n))
