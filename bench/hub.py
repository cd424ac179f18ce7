"""Benchmark: the hub against nginx (sendfile on) serving the same files, curl as the client.

    .venv/bin/python bench/hub.py [--size-mib 1024] [--runs 5] [--small-gets 1000] [--peer auto]

1. A large blob (default 1 GiB of random bytes) fetched with
   ``curl -s -o /dev/null -w '%{speed_download}'`` from the hub (`/blobs/sha256:…`) and
   from nginx (the same file, hard-linked into nginx's root), runs interleaved, page cache
   warmed before each. Reports MiB/s (median, min-max), the ratio, and each server's CPU
   seconds per GiB.
2. 1,000 GETs of a 4 KiB blob on one keep-alive connection (one curl process reading a
   config file of 1,000 URLs), wall time -> requests/s, hub vs nginx, interleaved.

nginx (Debian's nginx-light does) runs from a config written to the temp dir: 127.0.0.1 on a
free port, its pid file, error log and temp paths there, no access log, one worker; it is
stopped with SIGQUIT at the end, or when the bench is stopped (SIGTERM, Ctrl-C).

The hub runs as `flowctl serve --roles hub` in its own process. Its first GET of a blob
hashes the blob once (verify-on-serve; ~0.7 s per GiB); a warm-up request per server is
made before timing. This script installs nothing: without nginx it says how to get it
(`just bench-hub` installs it), or with `--peer sendfile` (the default where nginx is
missing) times a bare Python `os.sendfile` server instead (bench/_sendfile_server.py): the
same zero-copy data path for the large file, but no stand-in for nginx's small-GET rate.
The hub sends a large blob it has verified with `os.sendfile` too (runtime/hub/sendfile.py);
`--peer` rows are labelled with what ran. Both servers listen on 127.0.0.1 and are stopped
at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._machine import cpu_seconds, die_with_parent, machine_report

MIB = 1024 * 1024
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    types {{ application/octet-stream bin; }}
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        location / {{ }}
    }}
}}
"""


def find_nginx() -> str | None:
    """The nginx binary, if installed."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_worker(master: int) -> int:
    """The PID of nginx's single worker (its CPU is what serves)."""
    for _ in range(100):
        kids = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    return master


def warm(path: Path) -> None:
    with path.open("rb", buffering=0) as f:
        while f.read(8 * MIB):
            pass


def curl_speed(url: str) -> float:
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download} %{http_code}", url],
                         capture_output=True, text=True, check=True, timeout=600).stdout.split()
    if out[1] != "200":
        raise SystemExit(f"curl got HTTP {out[1]} from {url}")
    return float(out[0]) / MIB


def small_gets(url: str, n: int, config: Path) -> float:
    """n sequential keep-alive GETs in one curl process; returns requests per second."""
    config.write_text("".join(f'url = "{url}"\noutput = "/dev/null"\n' for _ in range(n)))
    start = time.perf_counter()
    subprocess.run(["curl", "-s", "--fail", "-K", str(config)], check=True, timeout=600)
    return n / (time.perf_counter() - start)


def start_hub(data_dir: Path, cwd: Path | None = None) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "FLOWCTL_ADMIN_KEY": "bench-key", "FLOWCTL_CONFIG": str(data_dir / "none.toml")}
    proc = subprocess.Popen([sys.executable, "-m", "flowctl", "serve", "--roles", "hub", "--data-dir",
                             str(data_dir), "--port", "0"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, preexec_fn=die_with_parent)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if match:
            return proc, match.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("the hub did not start")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def report(label: str, values: list[float], unit: str) -> float:
    med = statistics.median(values)
    print(f"  {label:<8} {med:9.0f} {unit}  ({min(values):.0f}-{max(values):.0f}, n={len(values)})")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--peer", choices=("auto", "nginx", "sendfile"), default="auto",
                        help="the server to compare with (auto: nginx if installed, else sendfile)")
    parser.add_argument("--compare", type=Path, default=None,
                        help="another flowctl checkout whose hub is timed alongside (before/after figures)")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--small-gets", type=int, default=1000)
    parser.add_argument("--small-runs", type=int, default=5)
    args = parser.parse_args()

    nginx = find_nginx() if args.peer != "sendfile" else None
    peer_name = "nginx" if nginx is not None else "sendfile"
    if nginx is None and args.peer == "nginx":
        raise SystemExit("nginx is not installed: `sudo apt-get install -y nginx` (or `just bench-hub`, "
                         "which installs it), then run this again")
    if shutil.which("curl") is None:
        raise SystemExit("curl is not installed: `sudo apt-get install -y curl`")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from hub_store import LocalBlobStore

    with tempfile.TemporaryDirectory(prefix="bench-hub-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # nginx's worker runs as another user when started by root
        (root / "www").mkdir()
        (root / "tmp").mkdir()
        store = LocalBlobStore(root / "hub")
        print(f"writing a {args.size_mib} MiB random blob and a 4 KiB one ...", flush=True)
        with store.writer() as w:
            for _ in range(args.size_mib):
                w.write(os.urandom(MIB))
            big = w.commit().digest
        small = store.put_bytes(os.urandom(4096)).digest
        os.link(store.path(big), root / "www" / "big.bin")
        os.link(store.path(small), root / "www" / "small.bin")

        port = free_port()
        if nginx is not None:
            (root / "nginx.conf").write_text(NGINX_CONF.format(root=root, port=port))
            # -e: nginx opens its error log before reading the config; keep even that one here.
            ngx = subprocess.Popen([nginx, "-c", str(root / "nginx.conf"), "-p", str(root),
                                    "-e", str(root / "nginx-error.log")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   preexec_fn=die_with_parent)
        else:
            ngx = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_sendfile_server.py")),
                                    str(root / "www"), str(port)], preexec_fn=die_with_parent)
        hub, hub_url = start_hub(root / "hub")
        ref = ref_url = None
        if args.compare is not None:
            ref_store = LocalBlobStore(root / "hub-ref")
            for digest in (big, small):
                ref_store.path(digest).parent.mkdir(parents=True, exist_ok=True)
                os.link(store.path(digest), ref_store.path(digest))
            ref, ref_url = start_hub(root / "hub-ref", cwd=args.compare.resolve())
        try:
            ngx_url = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            worker = nginx_worker(ngx.pid) if nginx is not None else ngx.pid
            urls = {"hub": (f"{hub_url}/blobs/sha256:{big}", f"{hub_url}/blobs/sha256:{small}", hub.pid),
                    peer_name: (f"{ngx_url}/big.bin", f"{ngx_url}/small.bin", worker)}
            if ref is not None:
                urls["hub@ref"] = (f"{ref_url}/blobs/sha256:{big}", f"{ref_url}/blobs/sha256:{small}", ref.pid)
            for big_url, small_url, _ in urls.values():  # warm-up (the hub verifies each blob once)
                warm(store.path(big))
                curl_speed(big_url)
                curl_speed(small_url)

            speeds: dict[str, list[float]] = {k: [] for k in urls}
            cpu: dict[str, list[float]] = {k: [] for k in urls}
            gib = args.size_mib / 1024
            for _ in range(args.runs):
                for name, (big_url, _, pid) in urls.items():
                    warm(store.path(big))
                    before = cpu_seconds(pid)
                    speeds[name].append(curl_speed(big_url))
                    cpu[name].append((cpu_seconds(pid) - before) / gib)
            print(f"\n{args.size_mib} MiB blob, curl, MiB/s:")
            med = {name: report(name, speeds[name], "MiB/s") for name in urls}
            for name in urls:
                print(f"  {name:<8} server CPU {statistics.median(cpu[name]):.2f} s/GiB")
            print(f"  ratio hub/{peer_name}: {med['hub'] / med[peer_name]:.2f} (target >= 0.8 of nginx)")
            if "hub@ref" in med:
                print(f"  ratio hub@ref/{peer_name}: {med['hub@ref'] / med[peer_name]:.2f} (the --compare checkout)")

            rates: dict[str, list[float]] = {k: [] for k in urls}
            for _ in range(args.small_runs):
                for name, (_, small_url, _) in urls.items():
                    rates[name].append(small_gets(small_url, args.small_gets, root / "curl.cfg"))
            print(f"\n{args.small_gets} sequential keep-alive GETs of 4 KiB, one curl, requests/s:")
            med = {name: report(name, rates[name], "req/s") for name in urls}
            print(f"  ratio hub/{peer_name}: {med['hub'] / med[peer_name]:.2f} (nginx: report only)")
            if "hub@ref" in med:
                print(f"  ratio hub@ref/{peer_name}: {med['hub@ref'] / med[peer_name]:.2f} (the --compare checkout)")
        finally:
            stop(hub)
            if ref is not None:
                stop(ref)
            stop(ngx, signal.SIGQUIT if nginx is not None else signal.SIGTERM)


if __name__ == "__main__":
    with machine_report():
        main()
