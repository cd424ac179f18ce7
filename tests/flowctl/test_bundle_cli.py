"""flowctl pack / verify / inspect / unpack / keys gen, as a user runs them (real subprocesses)."""

import json
import subprocess
import sys

import pytest

from tests.packer.conftest import write_source


def flowctl(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "flowctl", *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def _one_error_line(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def packed(tmp_path):
    src = write_source(tmp_path / "src")
    result = flowctl("pack", src, "-o", tmp_path / "dist")
    assert result.returncode == 0, result.stderr
    digest, path = result.stdout.split()
    return tmp_path / "dist" / "echo-1.0.0.fbundle", digest, path


def test_pack_prints_sha256_and_path_and_is_quiet_when_piped(packed, tmp_path):
    bundle, digest, path = packed
    assert path == str(bundle) and len(digest) == 64
    assert (tmp_path / "dist" / "echo-1.0.0.fbundle.sha256").read_text().split()[0] == digest


def test_pack_json_and_zip(tmp_path):
    src = write_source(tmp_path / "src")
    result = flowctl("pack", src, "-o", tmp_path / "d", "--format", "zip", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["zip"].endswith("echo-1.0.0.zip") and data["files"] == 4 and result.stderr == ""


def test_verify_and_inspect(packed):
    bundle, digest, _ = packed
    result = flowctl("verify", bundle, "--sha256", digest.upper())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ") and "unsigned" in result.stdout
    data = json.loads(flowctl("verify", bundle, "--json").stdout)
    assert data["ok"] and data["sha256"] == digest and data["files"] == 4
    result = flowctl("inspect", bundle)
    assert result.returncode == 0 and "echo-1" in result.stdout and "models/weights.bin" in result.stdout
    data = json.loads(flowctl("inspect", bundle, "--json").stdout)
    assert data["manifest"]["service_id"] == "echo" and data["signature"] == "unsigned"
    assert [f["path"] for f in data["manifest"]["files"]][0] == "lib/util.py"


def test_verify_checks_the_sha256_file_beside_the_bundle(packed):
    bundle, digest, _ = packed
    result = flowctl("verify", bundle)
    assert result.returncode == 0 and f"{digest} (matches echo-1.0.0.fbundle.sha256)" in result.stdout
    sidecar = bundle.with_name(bundle.name + ".sha256")
    sidecar.write_text(f"{'0' * 64}  {bundle.name}\n")
    result = flowctl("verify", bundle)
    assert result.returncode == 1 and "sha256 mismatch" in _one_error_line(result)


def test_verify_wrong_digest_is_one_line_exit_1(packed):
    bundle, _, _ = packed
    result = flowctl("verify", bundle, "--sha256", "0" * 64)
    assert result.returncode == 1
    assert "sha256 mismatch" in _one_error_line(result)


def test_corrupt_bundle_is_one_line_exit_1(packed):
    bundle, _, _ = packed
    data = bytearray(bundle.read_bytes())
    bundle.write_bytes(bytes(data[: len(data) - 100]))
    for command in (["verify", bundle], ["unpack", bundle, bundle.parent / "out"], ["inspect", bundle]):
        result = flowctl(*command)
        if command[0] == "inspect":  # reads only the manifest, which is intact
            assert result.returncode == 0
            continue
        assert result.returncode == 1
        assert "truncated" in _one_error_line(result)
    assert not (bundle.parent / "out").exists()


def test_a_file_that_is_not_a_bundle_is_named_one_line_exit_1(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    expected = f"error: {str(notes)!r} is not a flowctl bundle (.fbundle): it does not start with a zstd frame"
    for command in (["verify", notes], ["inspect", notes], ["unpack", notes, tmp_path / "out"],
                    ["publish", notes, "--hub", "http://127.0.0.1:9"]):
        result = flowctl(*command)
        assert result.returncode == 1, command
        assert _one_error_line(result) == expected, command
    assert not (tmp_path / "out").exists()
    result = flowctl("node", "install", notes, "--hub", "http://127.0.0.1:9", "--data-dir", tmp_path / "node")
    assert result.returncode == 1
    line = _one_error_line(result)
    assert "is a file" in line and "flowctl publish" in line


def test_unpack(packed, tmp_path):
    bundle, _, _ = packed
    dest = tmp_path / "out"
    result = flowctl("unpack", bundle, dest)
    assert result.returncode == 0, result.stderr
    assert (dest / "run.sh").stat().st_mode & 0o777 == 0o755
    again = flowctl("unpack", bundle, dest)
    assert again.returncode == 1 and "not an empty directory" in _one_error_line(again)


def test_sign_and_trust(tmp_path):
    src = write_source(tmp_path / "src")
    gen = flowctl("keys", "gen", tmp_path / "k" / "release")
    assert gen.returncode == 0, gen.stderr
    assert "key id" in gen.stdout
    other = json.loads(flowctl("keys", "gen", tmp_path / "other", "--json").stdout)
    assert flowctl("keys", "gen", tmp_path / "other").returncode == 1  # never overwrites
    packed = flowctl("pack", src, "-o", tmp_path / "d", "--sign", tmp_path / "k" / "release.key")
    assert packed.returncode == 0, packed.stderr
    bundle = tmp_path / "d" / "echo-1.0.0.fbundle"
    ok = flowctl("verify", bundle, "--trust", tmp_path / "k" / "release.pub")
    assert ok.returncode == 0 and "valid (" in ok.stdout
    bad = flowctl("verify", bundle, "--trust", other["public_key"])
    assert bad.returncode == 1 and "not among the trusted keys" in _one_error_line(bad)
    unsigned = flowctl("pack", src, "-o", tmp_path / "u")
    assert unsigned.returncode == 0
    required = flowctl("verify", tmp_path / "u" / "echo-1.0.0.fbundle", "--trust", tmp_path / "k" / "release.pub")
    assert required.returncode == 1 and "not signed" in _one_error_line(required)


def test_bad_service_json_names_the_field(tmp_path):
    src = write_source(tmp_path / "src", version="1.0")
    result = flowctl("pack", src, "-o", tmp_path / "d")
    assert result.returncode == 1
    assert _one_error_line(result) == "error: service.json: version '1.0' is not SemVer (MAJOR.MINOR.PATCH)"
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_usage_errors_exit_2(tmp_path):
    src = write_source(tmp_path / "src")
    assert flowctl("pack", src, "--level", "40").returncode == 2
    assert flowctl("pack", src, "--format", "rar").returncode == 2
    assert flowctl("verify").returncode == 2


def test_missing_file_is_exit_1(tmp_path):
    result = flowctl("verify", tmp_path / "nope.fbundle")
    assert result.returncode == 1 and "nope.fbundle" in _one_error_line(result)


@pytest.mark.parametrize("args", [["--help"], ["pack", "--help"], ["pack", "SRC"]])
def test_fast_paths_import_no_heavy_modules(args, tmp_path):
    src = write_source(tmp_path / "src")
    args = [str(src) if a == "SRC" else a for a in args] + (["-o", str(tmp_path / "d")] if "SRC" in args else [])
    code = (
        f"import sys, runpy; sys.argv=['flowctl', *{args!r}]\n"
        "try:\n    runpy.run_module('flowctl', run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = [m for m in ('pydantic', 'cryptography', 'trio', 'httpx', 'hypercorn', 'quart', 'markdown_it')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_inspect_shows_manifest_strings_verbatim_not_as_markup(tmp_path):
    src = write_source(tmp_path / "src", {"[b]x.txt": b"x"}, models=[], service_name="[red]evil[/red]",
                       description="\x1b[2Jclear")
    assert flowctl("pack", src, "-o", tmp_path / "d").returncode == 0
    result = flowctl("inspect", tmp_path / "d" / "echo-1.0.0.fbundle")
    assert result.returncode == 0, result.stderr
    assert "[red]evil[/red]" in result.stdout and "[b]x.txt" in result.stdout
    assert "\x1b" not in result.stdout
