from dataclasses import replace

from packer.manifest import Resources
from runtime.scheduler.placement import NodeCapacity
from runtime.scheduler.reconcile import Deployment, Replica, model_conflicts, reconcile

A = NodeCapacity("a", "alpha", ram_mb=8000)
B = NodeCapacity("b", "beta", ram_mb=8000)
C = NodeCapacity("c", "gamma", ram_mb=8000)


def ready(replicas):
    return tuple(replace(r, state="ready") for r in replicas)


def test_new_deployment_is_spread_over_nodes():
    plan = reconcile([Deployment("echo", "1.0.0", 2, Resources(ram_mb=100))], [], [A, B])
    assert [(r.replica_id, r.node_id, r.attempt) for r in plan.replicas] == [("r1", "a", 1), ("r2", "b", 1)]
    assert plan.unplaced == {}


def test_replica_on_a_lost_node_moves_with_a_higher_attempt():
    dep = Deployment("echo", "1.0.0", 2)
    placed = ready(reconcile([dep], [], [A, B]).replicas)
    plan = reconcile([dep], placed, [A, C])  # b was lost, c joined
    moved = {r.replica_id: r for r in plan.replicas}
    assert moved["r1"].node_id == "a" and moved["r1"].attempt == 1 and moved["r1"].state == "ready"
    assert moved["r2"].node_id == "c" and moved["r2"].attempt == 2 and moved["r2"].state == "pending"


def test_replica_stays_put_and_is_reported_when_nothing_fits():
    dep = Deployment("big", "1.0.0", 1, Resources(ram_mb=6000))
    placed = ready(reconcile([dep], [], [A]).replicas)
    plan = reconcile([dep], placed, [])
    assert plan.replicas == placed
    assert "no ready node" in plan.unplaced["big"]


def test_scale_up_and_down():
    dep = Deployment("echo", "1.0.0", 1)
    one = ready(reconcile([dep], [], [A, B]).replicas)
    three = reconcile([replace(dep, replicas=3)], one, [A, B]).replicas
    assert [r.replica_id for r in three] == ["r1", "r2", "r3"]
    down = reconcile([replace(dep, replicas=1)], ready(three), [A, B]).replicas
    assert [r.replica_id for r in down] == ["r1"]
    assert reconcile([], down, [A, B]).replicas == ()


def test_rolling_upgrade_keeps_capacity_and_goes_one_at_a_time():
    v1 = Deployment("echo", "1.0.0", 2)
    v2 = replace(v1, version="2.0.0")
    replicas = ready(reconcile([v1], [], [A, B]).replicas)
    seen = []
    for _ in range(10):
        replicas = reconcile([v2], replicas, [A, B]).replicas
        versions = sorted((r.version, r.state) for r in replicas)
        seen.append(versions)
        ready_count = sum(1 for r in replicas if r.state == "ready")
        assert ready_count >= 2  # never below the desired count of ready replicas
        replicas = ready(replicas)  # the nodes report the new replicas ready
        if all(r.version == "2.0.0" for r in replicas) and len(replicas) == 2:
            break
    assert seen[0] == [("1.0.0", "ready"), ("1.0.0", "ready"), ("2.0.0", "pending")]
    assert sorted(r.version for r in replicas) == ["2.0.0", "2.0.0"]


def test_pinned_deployment_only_uses_named_nodes():
    plan = reconcile([Deployment("echo", "1.0.0", 2, nodes=("beta",))], [], [A, B])
    assert {r.node_id for r in plan.replicas} == {"b"}


def test_a_model_id_claimed_by_two_services_is_a_conflict():
    llama = Deployment("llama-chat", "1.0.0", 1, models=("gemma3",))
    other = Deployment("other-chat", "1.0.0", 1, models=("gemma3", "x"))
    assert model_conflicts(other, [llama]) == ["model 'gemma3' is already served by service 'llama-chat'"]
    assert model_conflicts(replace(llama, version="2.0.0"), [llama]) == []


def test_replica_ids_are_not_reused_across_deployments():
    plan = reconcile([Deployment("a", "1.0.0", 1), Deployment("b", "1.0.0", 1)],
                     [Replica("r1", "a", "1.0.0", "a", state="ready")], [A, B])
    assert sorted(r.replica_id for r in plan.replicas) == ["r1", "r2"]


def test_pinning_a_deployment_moves_replicas_off_other_nodes():
    placed = ready(reconcile([Deployment("echo", "1.0.0", 2)], [], [A, B]).replicas)
    plan = reconcile([Deployment("echo", "1.0.0", 2, nodes=("beta",))], placed, [A, B])
    assert [(r.node_id, r.attempt) for r in plan.replicas] == [("b", 2), ("b", 1)]
    plan = reconcile([Deployment("echo", "1.0.0", 2, nodes=("ghost",))], placed, [A, B])
    assert {r.node_id for r in plan.replicas} == {"a", "b"} and "named ghost" in plan.unplaced["echo"]


GPU_NODE = NodeCapacity("g", "gpu-box", ram_mb=64000, gpu_vram_mb=(24000, 24000))
NEEDS_GPU = Resources(ram_mb=1000, vram_mb=16000, gpu="required")


def test_replicas_are_given_gpus_and_keep_them_while_they_stay():
    dep = Deployment("llm", "1.0.0", 2, NEEDS_GPU)
    plan = reconcile([dep], [], [GPU_NODE])
    assert [(r.replica_id, r.node_id, r.gpus) for r in plan.replicas] == [("r1", "g", (0,)), ("r2", "g", (1,))]
    again = reconcile([dep], ready(plan.replicas), [GPU_NODE])
    assert [r.gpus for r in again.replicas] == [(0,), (1,)] and again.unplaced == {}
    # A third replica: each GPU keeps 8000 MB free, so nothing fits, and the message says so.
    grown = reconcile([replace(dep, replicas=3)], ready(plan.replicas), [GPU_NODE])
    assert len(grown.replicas) == 2 and "gpu-box has 8000 MB VRAM free, needs 16000" in grown.unplaced["llm"]
    # Moved to another node: new GPUs there; a CPU-only service gets none.
    other = replace(GPU_NODE, node_id="h", name="other", gpu_index=(3, 7))
    moved = reconcile([dep], ready(plan.replicas), [other])
    assert [(r.node_id, r.gpus, r.attempt) for r in moved.replicas] == [("h", (3,), 2), ("h", (7,), 2)]
    cpu = reconcile([Deployment("echo", "1.0.0", 1)], [], [GPU_NODE])
    assert cpu.replicas[0].gpus == ()


def test_a_declared_port_puts_one_replica_per_node_and_says_why_not_more():
    dep = Deployment("nmt", "1.0.0", 3, port=5008)
    plan = reconcile([dep], [], [A, B])
    assert sorted(r.node_id for r in plan.replicas) == ["a", "b"]  # the two that fit are placed
    assert "alpha has port 5008 taken by a new replica" in plan.unplaced["nmt"]
    later = reconcile([dep], ready(plan.replicas), [A, B])
    assert later.replicas == ready(plan.replicas) and "alpha has port 5008 taken by nmt r" in later.unplaced["nmt"]
    other = Deployment("other", "1.0.0", 2, port=5008)  # another service on the same port
    both = reconcile([replace(dep, replicas=2), other], ready(plan.replicas), [A, B, C])
    assert [(r.service_id, r.node_id) for r in both.replicas if r.service_id == "other"] == [("other", "c")]
    assert "gamma has port 5008 taken by" in both.unplaced["other"]


def test_a_replica_whose_port_is_busy_on_its_node_moves():
    dep = Deployment("nmt", "1.0.0", 1, port=5008)
    placed = ready(reconcile([dep], [], [A]).replicas)
    busy_a = replace(A, busy_ports=frozenset({5008}))
    plan = reconcile([dep], placed, [busy_a, B])
    assert [(r.node_id, r.attempt) for r in plan.replicas] == [("b", 2)]
    stuck = reconcile([dep], placed, [busy_a])
    assert stuck.replicas == placed and "alpha has port 5008 in use by another process" in stuck.unplaced["nmt"]


def test_a_port_service_on_one_node_upgrades_in_place():
    dep = Deployment("nmt", "1.0.0", 1, port=5008)
    placed = ready(reconcile([dep], [], [A]).replicas)
    new = replace(dep, version="1.1.0")
    step1 = reconcile([new], placed, [A])
    assert step1.replicas == ()  # no room to surge: the old replica stops first, its port is the room
    step2 = reconcile([new], step1.replicas, [A])
    assert [(r.version, r.node_id) for r in step2.replicas] == [("1.1.0", "a")]
    # With a spare node the usual surge keeps a ready replica throughout.
    surge = reconcile([new], placed, [A, B])
    assert sorted((r.version, r.node_id) for r in surge.replicas) == [("1.0.0", "a"), ("1.1.0", "b")]
    # Nowhere for the new version at all (its node is gone): the old replica stays.
    assert reconcile([new], placed, []).replicas == placed


def test_replicas_on_a_reconnecting_node_stay_put():
    dep = Deployment("echo", "1.0.0", 2)
    placed = ready(reconcile([dep], [], [A, B]).replicas)
    waiting = reconcile([dep], placed, [A], reconnecting={"b"})
    assert waiting.replicas == placed
    gone = reconcile([dep], placed, [A])
    assert {r.node_id for r in gone.replicas} == {"a"}
