import pytest

from packer.manifest import Resources
from runtime.scheduler.placement import (
    NodeCapacity,
    PlacementError,
    choose_nodes,
    pick_gpus,
    reserve,
)

A = NodeCapacity("a", "alpha", ram_mb=8000)
B = NodeCapacity("b", "beta", ram_mb=16000)
G = NodeCapacity("g", "gpu-box", ram_mb=8000, gpu_vram_mb=(24000,))


def test_replicas_spread_across_nodes_before_doubling_up():
    assert choose_nodes(Resources(ram_mb=1000), 3, [A, B]) == ["b", "a", "b"]


def test_existing_replicas_count_for_spreading():
    assert choose_nodes(Resources(ram_mb=100), 1, [A, B], replicas_on={"b": 2}) == ["a"]


def test_nodes_that_do_not_fit_are_skipped_and_named_when_none_fits():
    assert choose_nodes(Resources(ram_mb=12000), 1, [A, B]) == ["b"]
    with pytest.raises(PlacementError) as info:
        choose_nodes(Resources(ram_mb=12000), 2, [A, B])
    message = str(info.value)
    assert "after placing 1 of 2" in message
    assert "alpha has 8000 MB RAM free, needs 12000" in message
    assert "beta has 4000 MB RAM free, needs 12000" in message


def test_gpu_required_and_optional():
    need = Resources(ram_mb=1000, vram_mb=20000, gpu="required")
    assert choose_nodes(need, 1, [A, B, G]) == ["g"]
    with pytest.raises(PlacementError, match="alpha has no GPU"):
        choose_nodes(need, 1, [A])
    with pytest.raises(PlacementError, match="gpu-box has 4000 MB VRAM free, needs 20000"):
        choose_nodes(need, 2, [G])
    assert choose_nodes(Resources(ram_mb=1000, gpu="optional"), 1, [B, G]) == ["g"]


def test_pinning_to_a_node_by_name_or_id():
    assert choose_nodes(Resources(), 2, [A, B], only=["alpha"]) == ["a", "a"]
    with pytest.raises(PlacementError, match="no ready node named nope"):
        choose_nodes(Resources(), 1, [A, B], only=["nope"])


def test_zero_replicas_need_no_node():
    assert choose_nodes(Resources(), 0, []) == []


TWO_GPUS = NodeCapacity("t", "twin", ram_mb=64000, gpu_vram_mb=(24000, 24000))


def test_replicas_needing_one_port_never_share_a_node():
    assert choose_nodes(Resources(), 2, [A, B], port=5008) == ["b", "a"]
    with pytest.raises(PlacementError) as info:
        choose_nodes(Resources(), 3, [A, B], port=5008)
    assert "after placing 2 of 3" in str(info.value)
    assert "alpha has port 5008 taken by a new replica" in str(info.value)
    assert info.value.chosen == ["b", "a"]  # what fitted is still known


def test_a_port_taken_by_a_replica_or_busy_on_the_node_rules_the_node_out_with_the_reason():
    held = reserve(A, Resources(), port=5008, holder="nmt r1")
    busy = NodeCapacity("b", "beta", ram_mb=16000, busy_ports=frozenset({5008}))
    with pytest.raises(PlacementError) as info:
        choose_nodes(Resources(), 1, [held, busy], port=5008)
    assert str(info.value) == ("no node fits a replica: alpha has port 5008 taken by nmt r1; "
                               "beta has port 5008 in use by another process")
    assert choose_nodes(Resources(), 1, [held, busy], port=5009) == ["b"]  # other ports are free
    assert choose_nodes(Resources(), 2, [held, busy]) == ["b", "a"]  # a service without a port


def test_gpus_are_given_by_index_spreading_over_a_nodes_gpus():
    need = Resources(ram_mb=1000, vram_mb=10000, gpu="required")
    node = TWO_GPUS
    given = []
    for _ in range(4):
        gpus = pick_gpus(node, need)
        given.append(gpus)
        node = reserve(node, need, gpus=gpus)
    assert given == [(0,), (1,), (0,), (1,)]  # the most free VRAM first, lowest index on a tie
    assert node.gpu_free_mb() == {0: 4000, 1: 4000}
    with pytest.raises(PlacementError, match="twin has 4000 MB VRAM free, needs 10000"):
        choose_nodes(need, 1, [node])


def test_declared_gpu_indexes_and_what_does_not_fit():
    node = NodeCapacity("x", "x", ram_mb=8000, gpu_vram_mb=(8000, 48000), gpu_index=(2, 5))
    assert pick_gpus(node, Resources(vram_mb=20000, gpu="required")) == (5,)
    assert pick_gpus(node, Resources(vram_mb=4000, gpu="optional")) == (5,)
    assert pick_gpus(node, Resources(vram_mb=60000, gpu="optional")) == ()  # runs without one
    assert pick_gpus(node, Resources(vram_mb=100)) == ()  # gpu: none
    assert pick_gpus(A, Resources(gpu="optional")) == ()


def test_gpu_optional_prefers_a_node_whose_gpu_has_room():
    full = reserve(G, Resources(vram_mb=20000, gpu="required"))
    roomy = NodeCapacity("r", "roomy", ram_mb=4000, gpu_vram_mb=(24000,))
    assert choose_nodes(Resources(vram_mb=10000, gpu="optional"), 1, [full, roomy]) == ["r"]
