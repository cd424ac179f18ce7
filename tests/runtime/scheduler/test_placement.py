import pytest

from packer.manifest import Resources
from runtime.scheduler.placement import NodeCapacity, PlacementError, choose_nodes

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
