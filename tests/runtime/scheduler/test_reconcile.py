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
