"""examples/demo.py, the README's main command, runs end to end."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (ROOT / "examples" / "echo" / "service.json").is_file(),
                    reason="examples/echo/service.json is not there yet (the echo worker's issue adds it)")
def test_demo_packs_verifies_and_inspects_the_echo_bundle(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo ok: echo-1.0.0.fbundle" in result.stdout
    assert (tmp_path / "echo-1.0.0.fbundle").is_file()
