"""`flowctl serve --roles hub`, `flowctl publish`, `flowctl hub ...` as a user runs them."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.hub_store.bundles import make_bundle

KEY = "cli-test-admin-key"


def flowctl(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "flowctl", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def served_hub(tmp_path):
    env = {**os.environ, "FLOWCTL_ADMIN_KEY": KEY, "FLOWCTL_CONFIG": str(tmp_path / "none.toml")}
    proc = subprocess.Popen([sys.executable, "-m", "flowctl", "serve", "--roles", "hub", "--data-dir",
                             str(tmp_path / "data"), "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            url = match.group(1) if match else None
            assert line or proc.poll() is None, "hub exited early"
        assert url, "hub did not start"
        yield url, {**env, "FLOWCTL_HUB_URL": url, "FLOWCTL_TOKEN": KEY}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0


def test_publish_ls_info_pull_yank_gc_fsck_ranking(served_hub, tmp_path):
    url, env = served_hub
    packed = make_bundle(tmp_path)
    r = flowctl("publish", str(packed.path), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["created"] is True
    r = flowctl("publish", str(packed.path), env=env)
    assert r.returncode == 0 and "already published" in r.stdout

    r = flowctl("hub", "ls", "--json", env=env)
    assert json.loads(r.stdout)[0]["latest_version"] == "1.0.0"
    r = flowctl("hub", "info", "echo@1.0.0", "--files", env=env)
    assert r.returncode == 0 and packed.sha256 in r.stdout and "weights.bin" in r.stdout

    r = flowctl("hub", "pull", "echo", "-o", str(tmp_path / "out"), "--json", env=env)
    assert r.returncode == 0, r.stderr
    pulled = json.loads(r.stdout)
    assert pulled["sha256"] == packed.sha256
    assert (tmp_path / "out" / "echo-1.0.0.fbundle").read_bytes() == packed.path.read_bytes()

    r = flowctl("hub", "ranking", "--json", env=env)
    assert json.loads(r.stdout)[0]["model_id"] == "echo-model"

    no_token = {k: v for k, v in env.items() if k != "FLOWCTL_TOKEN"}
    r = flowctl("hub", "yank", "echo@1.0.0", env=no_token)
    assert r.returncode == 1 and "admin key" in r.stderr and "Traceback" not in r.stderr
    r = flowctl("hub", "yank", "echo@1.0.0", env=env)
    assert r.returncode == 0 and "yanked=yes" in r.stdout
    r = flowctl("hub", "pull", "echo", "-o", str(tmp_path / "out2"), env=env)
    assert r.returncode == 1 and "no stable" in r.stderr

    r = flowctl("hub", "gc", "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["deleted"] == 0
    r = flowctl("hub", "fsck", env=env)
    assert r.returncode == 0 and "0 corrupt" in r.stdout


def test_bad_input_is_one_line(served_hub, tmp_path):
    url, env = served_hub
    r = flowctl("hub", "info", "../etc", env=env)
    assert r.returncode == 1 and "invalid service id" in r.stderr and "Traceback" not in r.stderr
    r = flowctl("hub", "ls", "--hub", "http://127.0.0.1:9", env=env)
    assert r.returncode == 1 and "unreachable" in r.stderr
    r = flowctl("serve", "--roles", "frontend,hub", env=env)
    assert r.returncode == 1 and "not available" in r.stderr
    r = flowctl("serve", "--roles", "gateway,hub", env=env)
    assert r.returncode == 1 and "needs the scheduler role" in r.stderr
    port = int(url.rsplit(":", 1)[1])  # taken by the running hub
    r = flowctl("serve", "--data-dir", str(tmp_path / "other"), "--port", str(port), env=env)
    assert r.returncode == 1 and "Address already in use" in r.stderr and "Traceback" not in r.stderr


def test_local_fsck_finds_corruption(tmp_path):
    from hub_store import open_data_dir, publish_file

    packed = make_bundle(tmp_path)
    with open_data_dir(tmp_path / "data") as data:
        publish_file(data.store, data.catalog, packed.path)
        path = data.store.path(packed.manifest.files[0].sha256)
    os.chmod(path, 0o644)
    path.write_bytes(b"rot")
    r = flowctl("hub", "fsck", "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 1 and "1 corrupt" in r.stdout


def test_publish_finds_the_hub_through_flowctl_server_and_checks_the_key_first(served_hub, tmp_path):
    url, env = served_hub
    env = {k: v for k, v in env.items() if k != "FLOWCTL_HUB_URL"} | {"FLOWCTL_SERVER": url}
    packed = make_bundle(tmp_path)
    r = flowctl("publish", str(packed.path), env=env)  # the plane serves the hub: FLOWCTL_SERVER is enough
    assert r.returncode == 0 and f"published: echo@1.0.0 sha256:{packed.sha256}" in r.stdout, r.stderr
    r = flowctl("publish", str(packed.path), env={**env, "FLOWCTL_TOKEN": "wrong"})
    assert r.returncode == 1 and "admin key" in r.stderr and "already published" not in r.stdout, r.stdout
    r = flowctl("publish", str(packed.path), "--hub", "http://127.0.0.1:1", env=env)  # the flag wins
    assert r.returncode == 1 and "127.0.0.1:1" in r.stderr


def test_publish_a_directory_packs_it_first(served_hub, tmp_path):
    url, env = served_hub
    packed = make_bundle(tmp_path, "1.2.0")
    source = tmp_path / "src-echo-1.2.0"
    r = flowctl("publish", str(source), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bundle_sha256"] == packed.sha256  # packing is deterministic
    assert not (source / "dist").exists()


def test_publish_a_seed_zip_matches_a_put_of_it_and_hub_info_names_both_digests(served_hub, tmp_path):
    import httpx

    from tests.packer.seedzips import seed_zip

    url, env = served_hub
    data = seed_zip()
    (tmp_path / "nmt.zip").write_bytes(data)
    r = flowctl("publish", str(tmp_path / "nmt.zip"), "--json", env=env)
    assert r.returncode == 0, r.stderr
    published = json.loads(r.stdout)
    assert published["created"] is True and published["service_id"] == "nmt-m2m100"
    # The hub packs a PUT zip the same way: the same bundle, so nothing new.
    put = httpx.put(f"{url}/api/services/nmt-m2m100/1.0.0", content=data,
                    headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/zip"})
    assert put.status_code == 200 and put.json()["bundle_sha256"] == published["bundle_sha256"]
    info = flowctl("hub", "info", "nmt-m2m100", env=env)
    assert info.returncode == 0, info.stderr
    assert f"{published['bundle_sha256']} (.fbundle)" in info.stdout
    assert f"{published['sha256']} " in info.stdout and "the seed's .zip" in info.stdout
    bad = tmp_path / "bad.zip"
    bad.write_bytes(seed_zip(checksum=b"0" * 64 + b"  README.md\n"))
    refused = flowctl("publish", str(bad), env=env)
    assert refused.returncode == 1 and refused.stderr.startswith("error: ") and len(refused.stderr.splitlines()) == 1


def test_serve_help_names_every_role(tmp_path):
    r = flowctl("--help", env={**os.environ, "FLOWCTL_CONFIG": str(tmp_path / "none.toml"), "COLUMNS": "200"})
    [line] = [x for x in r.stdout.splitlines() if re.match(r"[│ ]*serve {2,}", x)]
    assert "hub" in line and "scheduler" in line and "gateway" in line, line
