"""bench/_profile_shares.py charges each sample of the chosen process to its innermost frame's layer."""

from __future__ import annotations

from pathlib import Path

from bench._profile_shares import shares

RAW = """\
process 1:"python bench/gateway.py";process 2:"python bench/gateway.py --serve /tmp/x";thread (0x1);run (trio/_core/_run.py:1);send (trio/_socket.py:9) 6
process 1:"python bench/gateway.py";process 2:"python bench/gateway.py --serve /tmp/x";thread (0x1);run (trio/_core/_run.py:1);relay (runtime/tunnel/mux.py:3) 3
process 1:"python bench/gateway.py";process 2:"python bench/gateway.py --serve /tmp/x";thread (0x1);h (hypercorn/protocol/h11.py:5) 1
process 1:"python bench/gateway.py";thread (0x1);get (httpx/_client.py:1) 50
"""


def test_only_the_named_process_counts_and_each_sample_goes_to_its_innermost_layer(tmp_path: Path) -> None:
    raw = tmp_path / "p.raw"
    raw.write_text(RAW)
    counts, total = shares(raw, "--serve")
    assert total == 10
    assert counts == {"socket syscalls (trio/_socket)": 6, "flowctl: runtime/tunnel": 3,
                      "hypercorn, h11, wsproto, quart": 1}
