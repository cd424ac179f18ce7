import json

import pytest

from packer import ManifestError, parse_bundle_manifest, parse_source_manifest
from packer.manifest import FileEntry, check_path

GOOD = {
    "service_id": "echo",
    "service_name": "Echo",
    "version": "1.0.0",
    "service_type": "python",
    "port": 5008,
    "models": [{"model_id": "echo-1", "model_type": "chat", "version": "1.0.0", "path": "worker.py"}],
    "dependencies": {"python": ">=3.11"},
    "startup_command": "python worker.py",
    "health_check": {"endpoint": "/health", "method": "GET"},
    "created_at": "2025-12-17T00:00:00Z",
    "resources": {"ram_mb": 64, "gpu": "none"},
}


def raw(**changes):
    data = dict(GOOD, **changes)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


def test_source_manifest_parses_with_defaults():
    m = parse_source_manifest(raw(service_name=None, health_check=None))
    assert m.service_name == "echo"
    assert m.health_check.endpoint == "/health"
    assert m.resources.ram_mb == 64 and m.resources.gpu == "none"
    assert m.models[0].model_type == "chat"


def test_seed_sha256_field_is_accepted_and_dropped():
    m = parse_source_manifest(raw(sha256="abc123..."))
    assert "sha256" not in m.to_dict()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": "1.0"}, "service.json: version '1.0' is not SemVer (MAJOR.MINOR.PATCH)"),
        ({"service_id": "Bad Id"}, "service.json: service_id 'Bad Id' does not match"),
        ({"service_id": None}, "service.json: service_id is required"),
        ({"port": 70000}, "service.json: port 70000 is out of range (1..65535)"),
        ({"port": "80"}, "service.json: port must be an integer, not str"),
        ({"models": [{"model_id": "x", "model_type": "llm"}]},
         "service.json: models[0].model_type 'llm' is not one of"),
        ({"startup_command": "  "}, "service.json: startup_command is empty"),
        ({"colour": "red"}, "service.json: unknown field 'colour'"),
        ({"resources": {"gpu": "maybe"}}, "service.json: resources.gpu 'maybe' is not one of"),
        ({"health_check": {"endpoint": "health"}}, "service.json: health_check.endpoint 'health' must start"),
        ({"created_at": "yesterday"}, "service.json: created_at 'yesterday' is not an RFC 3339"),
        ({"dependencies": ["python"]}, "service.json: dependencies must be an object of strings"),
        ({"env": ["A=1"]}, "service.json: env must be an object, not list"),
        ({"env": {"A-B": "1"}}, "service.json: env.A-B 'A-B' is not a variable name"),
        ({"env": {"N": 1}}, "service.json: env.N must be a string, not int"),
        ({"env": {"FLOWCTL_PORT": "1"}}, "service.json: env.FLOWCTL_PORT FLOWCTL_* variables are set by the node"),
    ],
)
def test_invalid_fields_are_named(changes, message):
    with pytest.raises(ManifestError) as info:
        parse_source_manifest(raw(**changes))
    assert str(info.value).startswith(message)


def test_duplicate_keys_and_bad_json_are_rejected():
    with pytest.raises(ManifestError, match="duplicate key 'version'"):
        parse_source_manifest(b'{"version": "1.0.0", "version": "2.0.0"}')
    with pytest.raises(ManifestError, match="is not valid JSON"):
        parse_source_manifest(b"{not json")
    with pytest.raises(ManifestError, match="NaN is not allowed"):
        parse_source_manifest(b'{"port": NaN}')


def _bundle_manifest():
    src = parse_source_manifest(raw())
    files = [FileEntry("worker.py", 10, 0o644, "a" * 64), FileEntry("run.sh", 3, 0o755, "b" * 64)]
    return src.with_files(files, "2025-12-17T00:00:00Z")


def test_bundle_manifest_round_trips_canonically():
    m = _bundle_manifest()
    blob = m.canonical_bytes()
    assert parse_bundle_manifest(blob) == m
    assert [f.path for f in m.files] == ["run.sh", "worker.py"]


def test_env_is_declared_sorted_and_absent_from_the_canonical_form_when_empty():
    m = parse_source_manifest(raw(env={"OMP_NUM_THREADS": "2", "ECHO_MAX_CONCURRENCY": "4"}))
    assert m.env == (("ECHO_MAX_CONCURRENCY", "4"), ("OMP_NUM_THREADS", "2"))
    bundled = m.with_files([FileEntry("worker.py", 10, 0o644, "a" * 64)], "2025-12-17T00:00:00Z")
    assert parse_bundle_manifest(bundled.canonical_bytes()).env == m.env
    # A manifest without env keeps the bytes (and so the signatures) it had before env existed.
    assert b'"env"' not in _bundle_manifest().canonical_bytes()


def test_non_canonical_bundle_manifest_is_rejected():
    blob = json.dumps(json.loads(_bundle_manifest().canonical_bytes())).encode()
    with pytest.raises(ManifestError, match="not in canonical form"):
        parse_bundle_manifest(blob)


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (["a.py", "A.py"], "'a.py' collides with 'A.py' ignoring case"),
        (["lib", "lib/x.py"], "'lib' is both a file and a directory"),
        (["service.json"], "reserved name"),
    ],
)
def test_file_table_collisions(paths, message):
    src = parse_source_manifest(raw(models=[]))
    files = [FileEntry(p, 1, 0o644, "c" * 64) for p in paths]
    with pytest.raises(ManifestError, match=message):
        src.with_files(files, "2025-12-17T00:00:00Z")


@pytest.mark.parametrize(
    "path",
    ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\\b", "C:x", "a\x00b", "a\nb", "x" * 256],
)
def test_unsafe_paths(path):
    with pytest.raises(ValueError):
        check_path(path)
