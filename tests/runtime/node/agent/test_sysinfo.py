"""What a node declares: simulated GPUs from FLOWCTL_NODE_GPUS, with their indexes."""

import pytest

from runtime.control.messages import Gpu
from runtime.node.agent import sysinfo
from runtime.node.agent.errors import JoinRefused


def test_declared_gpus_are_indexed_in_order():
    assert sysinfo.declared_gpus("A100:40960, sim gpu:8000") == (
        Gpu(name="A100", vram_mb=40960, index=0), Gpu(name="sim gpu", vram_mb=8000, index=1))
    assert sysinfo.declared_gpus("none") == ()


@pytest.mark.parametrize("text", ["A100", "A100:", ":100", "A100:lots", "A100:-1", "a:1,,b:2"])
def test_a_malformed_declaration_is_refused_naming_the_entry(text):
    with pytest.raises(sysinfo.BadGpuDeclaration, match=r"FLOWCTL_NODE_GPUS: .* is not NAME:VRAM_MB") as info:
        sysinfo.declared_gpus(text)
    assert isinstance(info.value, JoinRefused)  # the agent stops with the reason instead of retrying


async def test_the_declaration_wins_over_nvidia_smi(monkeypatch):
    monkeypatch.setenv("FLOWCTL_NODE_GPUS", "sim:1024")
    assert await sysinfo.nvidia_gpus() == (Gpu(name="sim", vram_mb=1024, index=0),)
    monkeypatch.delenv("FLOWCTL_NODE_GPUS")
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi: no GPU
    assert await sysinfo.nvidia_gpus() == ()
