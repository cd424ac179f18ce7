"""`flowctl pack DIR` without DIR/service.json: generated from flags (as seed 001's pack script does),
or asked for on a terminal; never a half-written file; a clear usage error otherwise."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

from packer import open_bundle
from tests.flowctl.test_bundle_cli import _one_error_line, flowctl


def service_dir(tmp_path, files=None):
    src = tmp_path / "nmt"
    src.mkdir(parents=True)
    for rel, data in (files or {"nmt_service.py": b"print('nmt')\n", "models/m2m/model.onnx": b"ONNX"}).items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return src


def bundle_manifest(path):
    with open(path, "rb") as f, open_bundle(f) as reader:
        return reader.manifest


def test_flags_generate_service_json_then_pack(tmp_path):
    src = service_dir(tmp_path)
    r = flowctl("pack", src, "-o", tmp_path / "dist", "--id", "nmt-m2m100", "--version", "1.0.0", "--type", "python",
                "--port", "5008", "--name", "M2M100 NMT Service", "--model", "m2m100-en-zh:nmt:models/m2m")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[1] == str(tmp_path / "dist" / "nmt-m2m100-1.0.0.fbundle")
    assert "wrote" in r.stderr and "'python nmt_service.py' was guessed" in r.stderr
    written = json.loads((src / "service.json").read_text())
    assert written == {"service_id": "nmt-m2m100", "service_name": "M2M100 NMT Service", "version": "1.0.0",
                       "service_type": "python", "port": 5008,
                       "models": [{"model_id": "m2m100-en-zh", "model_type": "nmt", "path": "models/m2m",
                                   "version": "1.0.0"}],
                       "startup_command": "python nmt_service.py"}
    m = bundle_manifest(tmp_path / "dist" / "nmt-m2m100-1.0.0.fbundle")
    assert (m.port, m.startup_command, m.models[0].model_id) == (5008, "python nmt_service.py", "m2m100-en-zh")
    # Now the file exists: packing again needs no flags, and flags are refused rather than ignored.
    assert flowctl("pack", src, "-o", tmp_path / "dist").returncode == 0
    again = flowctl("pack", src, "-o", tmp_path / "dist", "--port", "6000")
    assert again.returncode == 2 and "service.json exists; --port only generate a missing one" in _one_error_line(again)


def test_missing_flags_without_a_terminal_is_a_usage_error_and_writes_nothing(tmp_path):
    src = service_dir(tmp_path)
    r = flowctl("pack", src, "-o", tmp_path / "dist", "--port", "5008")
    assert r.returncode == 2
    line = _one_error_line(r)
    assert "has no service.json: pass --id and --version to generate one" in line and "terminal" in line
    only_id = flowctl("pack", src, "--id", "nmt", "-o", tmp_path / "dist")
    assert only_id.returncode == 2 and "pass --version" in _one_error_line(only_id)
    no_entry = service_dir(tmp_path / "b", {"a.py": b"", "b.py": b""})
    r = flowctl("pack", no_entry, "--id", "x", "--version", "1.0.0", "-o", tmp_path / "dist")
    assert r.returncode == 2 and "pass --start" in _one_error_line(r)
    assert sorted(os.listdir(src)) == ["models", "nmt_service.py"] and not (tmp_path / "dist").exists()


def test_bad_values_name_the_flag_and_write_nothing(tmp_path):
    src = service_dir(tmp_path)
    cases = [(["--version", "one"], "--version: 'one' is not SemVer"),
             (["--version", "1.0.0", "--port", "70000"], "--port"),
             (["--version", "1.0.0", "--model", "m2m"], "--model: 'm2m' is not ID:TYPE[:PATH]"),
             (["--version", "1.0.0", "--health", "health"], "--health: 'health' must start with '/'")]
    for args, message in cases:
        r = flowctl("pack", src, "--id", "nmt", *args, "-o", tmp_path / "dist")
        assert r.returncode == 1, (args, r.stderr)
        assert message in _one_error_line(r)
    # Valid on its own, refused by the packer (the model path names no file): not kept either.
    r = flowctl("pack", src, "--id", "nmt", "--version", "1.0.0", "--model", "m:nmt:models/none", "-o", tmp_path / "d")
    assert r.returncode == 1 and "names no file" in _one_error_line(r)
    assert sorted(os.listdir(src)) == ["models", "nmt_service.py"]


class Terminal:
    """flowctl on a real pseudo-terminal, answered prompt by prompt (every read has a deadline)."""

    def __init__(self, *args):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "flowctl", *map(str, args)], stdin=slave,
                                     stdout=slave, stderr=slave, close_fds=True,
                                     env={**os.environ, "COLUMNS": "200", "TERM": "dumb"})
        os.close(slave)
        self.seen = b""

    def expect(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} in {self.seen.decode(errors='replace')!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"ended without {text!r}: {self.seen.decode(errors='replace')!r}"
                self.seen += chunk

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.master)


def test_on_a_terminal_the_missing_fields_are_asked_for(tmp_path):
    src = service_dir(tmp_path)
    term = Terminal("pack", src, "-o", tmp_path / "dist", "--port", "5008")
    try:
        term.expect("service id [nmt]:")
        term.send("nmt-m2m100")
        term.expect("version [1.0.0]:")
        term.send("")
        term.expect("service type [python]:")
        term.send("")
        term.expect("startup command [python nmt_service.py]:")
        term.send("")
        term.expect("and pack? [Y/n]:")
        term.send("y")
        term.expect("nmt-m2m100-1.0.0.fbundle")
    finally:
        assert term.close() == 0, term.seen
    written = json.loads((src / "service.json").read_text())
    assert (written["service_id"], written["version"], written["port"]) == ("nmt-m2m100", "1.0.0", 5008)
    assert (tmp_path / "dist" / "nmt-m2m100-1.0.0.fbundle").is_file()


def test_declining_or_interrupting_on_a_terminal_writes_nothing(tmp_path):
    src = service_dir(tmp_path)
    term = Terminal("pack", src, "-o", tmp_path / "dist")
    try:
        term.expect("service id [nmt]:")
        term.send("")
        term.expect("version [1.0.0]:")
        term.send("2.0.0")
        term.expect("service type [python]:")
        term.send("")
        term.expect("startup command")
        term.send("")
        term.expect("port it listens on")
        term.send("nope")
        term.expect("'nope' is not a port")
        term.send("")
        term.expect("and pack? [Y/n]:")
        term.send("n")
        term.expect("nothing written")
    finally:
        assert term.close() == 2, term.seen
    for stop in ("eof", "interrupt"):
        term = Terminal("pack", src, "-o", tmp_path / "dist")
        try:
            term.expect("service id [nmt]:")
            term.send("nmt")
            term.expect("version [1.0.0]:")
            if stop == "eof":
                os.write(term.master, b"\x04")  # Ctrl-D
            else:
                term.proc.send_signal(signal.SIGINT)  # what Ctrl-C does to the foreground process
        finally:
            assert term.close() != 0, term.seen
    assert sorted(os.listdir(src)) == ["models", "nmt_service.py"] and not (tmp_path / "dist").exists()
