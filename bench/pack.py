"""Benchmark: flowctl pack / verify / unpack against the classic shell pipelines.

Generates a bundle source in a temporary directory (a "model" file of random
bytes, 90 % of --size-mib, plus ~5,000 small text/code files), then times, as
whole processes including interpreter start, interleaved, median of --runs:

    pack    flowctl pack DIR          vs  tar -cf - DIR | zstd -3 -T0 | tee OUT | openssl dgst -sha256
    verify  flowctl verify BUNDLE     vs  openssl dgst -sha256 BUNDLE
    unpack  flowctl unpack BUNDLE D   vs  tar -I zstd -xf BUNDLE -C D

and two reference pipelines for the bundle format's floor (what verify must do, done by
the C tools in parallel processes), timed in the same rounds:

    2-pass  tee >(openssl dgst -sha256) < BUNDLE | zstd -dcq | openssl dgst -sha256
            (the file's SHA-256 + decoding + the members' SHA-256: today's format)
    1-pass  zstd -dcq BUNDLE | openssl dgst -sha256
            (decoding + one SHA-256: a format whose identity were the manifest's digest)

It reports wall seconds (median and best), ratios ours / peer (< 1 is faster), and for
each process tree its user+sys CPU seconds, minor page faults and peak RSS, all from
GNU time's wait4() on the command (so flowctl's own peak, not the bench's, which a child
would otherwise inherit across fork+exec). `--compare DIR`
also times verify and unpack from another checkout (an older commit, say), interleaved
in the same rounds, for before/after figures under the same load. The machine and its
load are printed before and after. Everything it creates is deleted at the end.

    .venv/bin/python bench/pack.py                 # ~1 GiB, 3 runs
    .venv/bin/python bench/pack.py --size-mib 64   # smoke run
    nice -n 5 .venv/bin/python bench/pack.py --only verify,unpack --runs 5 --compare /tmp/old
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._machine import die_with_parent, machine_report

ROOT = Path(__file__).resolve().parent.parent


def make_source(root: Path, size_mib: int, small_files: int) -> None:
    """service.json + models/model.bin (random) + text files under src/ and docs/."""
    root.mkdir(parents=True)
    (root / "service.json").write_text(
        '{"service_id": "bench", "version": "1.0.0", "startup_command": "python src/main.py",'
        ' "created_at": "2026-01-01T00:00:00Z",'
        ' "models": [{"model_id": "bench-model", "model_type": "chat", "path": "models/model.bin"}]}\n')
    model_bytes = size_mib * 9 // 10 << 20
    (root / "models").mkdir()
    with open(root / "models" / "model.bin", "wb") as f:
        left = model_bytes
        while left:
            n = min(left, 16 << 20)
            f.write(os.urandom(n))
            left -= n
    small_total = (size_mib << 20) - model_bytes
    rng = random.Random(2)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz_", k=rng.randint(2, 10))) for _ in range(3000)]
    corpus = b"".join(rng.choice(words) + rng.choice([b" ", b" ", b"(", b"): ", b"\n    "])
                      for _ in range(400_000))
    per_file = max(1, small_total // small_files)
    for i in range(small_files):
        sub = root / ("src" if i % 3 else "docs") / f"pkg{i % 50:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        size = max(1, int(per_file * rng.uniform(0.2, 1.8)))
        start = rng.randrange(0, max(1, len(corpus) - size))
        (sub / f"mod{i:05d}.py").write_bytes(b"# file %d\n" % i + corpus[start:start + size])
    (root / "src" / "main.py").write_text("print('bench')\n")


def warm(path: Path) -> None:
    """Read a tree once so every timing starts from a warm page cache."""
    subprocess.run(f"find {path} -type f -print0 | xargs -0 cat > /dev/null", shell=True, check=True)


@dataclass
class Sample:
    """One whole process tree: wall and CPU seconds, minor page faults, peak RSS (KiB)."""

    wall: float
    cpu: float
    faults: int
    rss_kib: int


GNU_TIME = "/usr/bin/time"


def run(cmd: list[str] | str, *, cwd: Path | None = None) -> Sample:
    """Run `cmd` (a shell line when a str) to completion and measure its process tree.

    The rusage comes from GNU time's wait4() on the command, not from ours: a child inherits
    its parent's peak RSS across fork+exec (Linux keeps the old image's high-water mark), so
    wait4() from this bench, which holds the generated source's buffers, would report this
    process's peak as flowctl's. Without GNU time, our own wait4() is used (an upper bound).
    """
    argv = ["/bin/bash", "-c", cmd] if isinstance(cmd, str) else cmd
    with tempfile.NamedTemporaryFile("r", prefix="flowctl-bench-rusage-") as stats:
        if Path(GNU_TIME).exists():
            argv = [GNU_TIME, "-q", "-o", stats.name, "-f", "%U %S %R %M", *argv]
        start = time.perf_counter()
        # Its own process group, so that a bench stopped by Ctrl-C or SIGTERM (turned into
        # SIGINT by machine_report) kills the whole tree it started, time's child included.
        proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=die_with_parent, start_new_session=True)
        assert proc.stderr is not None
        try:
            err = proc.stderr.read()
            _pid, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        elapsed = time.perf_counter() - start
        proc.stderr.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            sys.exit(f"command failed ({proc.returncode}): {cmd}\n{err.decode(errors='replace')}")
        fields = stats.read().split()
    if len(fields) == 4:
        user, system, faults, rss = fields
        return Sample(elapsed, float(user) + float(system), int(faults), int(rss))
    return Sample(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_minflt, usage.ru_maxrss)


def flowctl(*args: str) -> list[str]:
    """A flowctl command line (run with cwd = the checkout to use)."""
    return [sys.executable, "-m", "flowctl", *args]


LABELS = {"pack": "tar | zstd -3 -T0 | tee | openssl dgst", "verify": "openssl dgst -sha256",
          "unpack": "tar -I zstd -xf", "2-pass": "tee >(openssl) | zstd -dc | openssl (format floor)",
          "1-pass": "zstd -dc | openssl (one-pass format)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--size-mib", type=int, default=1024, help="source size in MiB (default 1024)")
    parser.add_argument("--files", type=int, default=5000, help="number of small files (default 5000)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per command (default 3)")
    parser.add_argument("--only", default="pack,verify,unpack",
                        help="comma-separated subset of pack,verify,unpack to time (default: all)")
    parser.add_argument("--compare", type=Path, default=None,
                        help="another flowctl checkout whose verify/unpack are timed alongside")
    parser.add_argument("--tmp", type=Path, default=None, help="where to put the data (default: $TMPDIR)")
    args = parser.parse_args()
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    if not only or set(only) - {"pack", "verify", "unpack"}:
        parser.error(f"--only: {args.only!r} is not a subset of pack,verify,unpack")
    if args.compare is not None and not (args.compare / "packer" / "reader.py").is_file():
        parser.error(f"--compare: {str(args.compare)!r} is not a flowctl checkout (no packer/reader.py)")
    for tool in ("tar", "zstd", "openssl", "tee"):
        if shutil.which(tool) is None:
            sys.exit(f"bench needs {tool!r} on PATH")
    files = max(10, min(args.files, args.size_mib * 5))
    with tempfile.TemporaryDirectory(prefix="flowctl-bench-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "src"
        print(f"generating {args.size_mib} MiB source ({files} small files) in {tmp} ...", flush=True)
        make_source(src, args.size_mib, files)
        src_bytes = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        out = tmp / "dist"
        bundle = out / "bench-1.0.0.fbundle"
        pipe_out = tmp / "pipe.tar.zst"
        if "pack" not in only:
            run(flowctl("pack", str(src), "-o", str(out)), cwd=ROOT)
        warm(src)
        ref = args.compare.resolve() if args.compare is not None else None
        rows: dict[str, tuple[list[str], str, Path | None]] = {}
        if "pack" in only:
            rows["pack"] = (flowctl("pack", str(src), "-o", str(out)),
                            f"set -o pipefail; tar -cf - -C {tmp} src | zstd -q -3 -T0 | tee {pipe_out}"
                            " | openssl dgst -sha256", None)
        if "verify" in only:
            rows["verify"] = (flowctl("verify", str(bundle)), f"openssl dgst -sha256 {bundle}", None)
        if "unpack" in only:
            rows["unpack"] = (flowctl("unpack", str(bundle), str(tmp / "ours")),
                              f"mkdir {tmp / 'theirs'} && tar -I zstd -xf {bundle} -C {tmp / 'theirs'}", None)
        for name in ("verify", "unpack"):
            if ref is not None and name in rows:
                rows[f"{name}@ref"] = (rows[name][0], rows[name][1], ref)
        extra = {}
        if "verify" in only:
            extra = {"2-pass": f"set -o pipefail; tee >(openssl dgst -sha256 >/dev/null) < {bundle}"
                               " | zstd -dcq | openssl dgst -sha256",
                     "1-pass": f"set -o pipefail; zstd -dcq {bundle} | openssl dgst -sha256"}
        ours: dict[str, list[Sample]] = {name: [] for name in rows}
        theirs: dict[str, list[Sample]] = {name: [] for name in list(rows) + list(extra)}
        for i in range(args.runs + 1):  # the first round is a warm-up, not counted
            for name, (cmd, peer, cwd) in rows.items():
                shutil.rmtree(tmp / "ours", ignore_errors=True)
                shutil.rmtree(tmp / "theirs", ignore_errors=True)
                a = run(cmd, cwd=cwd or ROOT)
                b = run(peer)
                if i:
                    ours[name].append(a)
                    theirs[name].append(b)
            for name, peer in extra.items():
                b = run(peer)
                if i:
                    theirs[name].append(b)
        shutil.rmtree(tmp / "ours", ignore_errors=True)
        shutil.rmtree(tmp / "theirs", ignore_errors=True)
        report(ours, theirs, src_bytes, bundle.stat().st_size, files, args.runs, ref)


def report(ours: dict[str, list[Sample]], theirs: dict[str, list[Sample]], src_bytes: int, bundle_bytes: int,
           files: int, runs: int, ref: Path | None) -> None:
    """Print one table: every figure and ratio comes from the same interleaved rounds."""
    print(f"\nsource {src_bytes / 2**20:.0f} MiB in {files + 2} files; bundle {bundle_bytes / 2**20:.0f} MiB; "
          f"{runs} runs after a warm-up (whole processes, warm page cache), CPUs: {os.cpu_count()}")
    if ref is not None:
        print(f"@ref rows: flowctl from {ref}")
    print(f"{'':11}{'flowctl':>8}{'best':>7}{'peer':>7}{'best':>7}{'ratio':>6}{'best':>6}{'MiB/s':>6}"
          f"{'cpu':>7}{'cpu':>7}{'ratio':>6}{'faults':>8}{'faults':>8}{'RSS MB':>7}{'RSS MB':>7}  peer")
    for name, ss in theirs.items():
        b, bb = statistics.median(s.wall for s in ss), min(s.wall for s in ss)
        d = statistics.median(s.cpu for s in ss)
        f_peer = statistics.median(s.faults for s in ss)
        rss_peer = max(s.rss_kib for s in ss) / 1024
        if name not in ours:
            print(f"{name:11}{'':8}{'':7}{b:6.2f}s{bb:6.2f}s{'':6}{'':6}{src_bytes / 2**20 / b:6.0f}"
                  f"{'':7}{d:6.2f}s{'':6}{'':8}{f_peer:8.0f}{'':7}{rss_peer:7.0f}  {LABELS[name]}")
            continue
        os_ = ours[name]
        a, ab = statistics.median(s.wall for s in os_), min(s.wall for s in os_)
        c = statistics.median(s.cpu for s in os_)
        f_ours = statistics.median(s.faults for s in os_)
        rss = max(s.rss_kib for s in os_) / 1024
        print(f"{name:11}{a:7.2f}s{ab:6.2f}s{b:6.2f}s{bb:6.2f}s{a / b:6.2f}{ab / bb:6.2f}"
              f"{src_bytes / 2**20 / a:6.0f}{c:6.2f}s{d:6.2f}s{c / d:6.2f}{f_ours:8.0f}{f_peer:8.0f}"
              f"{rss:7.0f}{rss_peer:7.0f}  {LABELS[name.split('@')[0]]}")
    if "verify" in ours and "2-pass" in theirs:
        v = statistics.median(s.wall for s in ours["verify"])
        print(f"verify vs the format's floor (2-pass): {v / statistics.median(s.wall for s in theirs['2-pass']):.2f}x;"
              f" 2-pass / openssl: {statistics.median(s.wall for s in theirs['2-pass']) / statistics.median(s.wall for s in theirs['verify']):.2f}x;"
              f" 1-pass / openssl: {statistics.median(s.wall for s in theirs['1-pass']) / statistics.median(s.wall for s in theirs['verify']):.2f}x")
    print("wall: whole-process seconds (median, best); ratio: flowctl / peer (median, best); cpu: user+sys seconds "
          "of the process tree (median); faults: minor page faults (median); RSS: peak resident set of the "
          "largest process in the tree (GNU time's wait4() on the command)")


if __name__ == "__main__":
    # A bench started in the background by a non-interactive shell inherits SIGINT ignored,
    # which would make machine_report's SIGTERM -> SIGINT a no-op: restore the default.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with machine_report():
        main()
