"""Pack a source directory into NAME-VERSION.fbundle (and its .sha256 beside it).

The manifest must be the first member, yet it holds every file's SHA-256. To
read each source file only once, packing runs in two passes:

1. Body: each file is read once in chunks; the chunk is hashed in this thread
   (hashlib releases the GIL) while zstd's worker threads compress it into a
   temporary body file: one zstd frame with every file member and the tar end.
2. Bundle: the manifest (now complete) and the signature are compressed into a
   small first frame; it is written to the output followed by the body, which is
   hashed in a second thread as it is copied. Concatenated zstd frames decode as
   one stream, so the result is one tar: service.json, service.json.sig, files.

Both files appear atomically (temporary file + rename); nothing is left behind on
failure. zstd output does not depend on the number of threads, so it is
byte-identical for the same input with the same libzstd.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packer.errors import PackerError
from packer.hashing import BIG_CHUNK, BackgroundHasher
from packer.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    FileEntry,
    Manifest,
    parse_bundle_manifest,
)
from packer.source import Source, SourceError, SourceFile, bundle_mtime, scan_source
from packer.tarfmt import END_OF_ARCHIVE, file_header, padding

FORMATS = ("fbundle", "zip")
SMALL_FILE = 256 * 1024  # read whole; batched into one compressor write
_BATCH = 1 << 20


@dataclass(frozen=True)
class PackResult:
    """What `pack_dir` wrote."""

    path: Path
    sha256: str
    size: int
    manifest: Manifest
    signed: bool
    zip_path: Path | None = None


def pack_dir(src: Path, out_dir: Path, *, level: int = 3, signing_key: Path | None = None,
             fmt: str = "fbundle", progress: Callable[[int], None] | None = None) -> PackResult:
    """Pack SRC into OUT_DIR/NAME-VERSION.fbundle (and .sha256, and .zip with fmt="zip").

    `progress` gets increments that add up to twice the source size: the first
    half while the source is read, hashed and compressed, the second (scaled to
    source bytes) while the bundle is written out and hashed.
    """

    if fmt not in FORMATS:
        raise PackerError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if not 1 <= level <= 19:
        raise PackerError(f"compression level {level} is out of range (1..19)")
    out_dir = Path(out_dir)
    source = scan_source(Path(src), exclude=out_dir)
    mtime, created_at = bundle_mtime(source)
    # Validate the complete manifest (model paths, collisions) before the heavy work.
    draft = source.manifest.with_files(
        [FileEntry(f.path, f.size, f.mode, "0" * 64) for f in source.files], created_at)
    parse_bundle_manifest(draft.canonical_bytes())
    private_key = None
    if signing_key is not None:
        from packer.signing import load_private_key

        private_key = load_private_key(Path(signing_key))

    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{draft.name}.fbundle"
    compressor = _compressor(level)
    with tempfile.TemporaryFile(dir=out_dir, prefix=f".{draft.name}.body.") as body:
        entries = _write_body(source, mtime, compressor, body, progress)
        manifest = source.manifest.with_files(entries, created_at)
        manifest_bytes = manifest.canonical_bytes()
        prefix = file_header(MANIFEST_NAME, len(manifest_bytes), 0o644, mtime) + manifest_bytes
        prefix += bytes(padding(len(manifest_bytes)))
        if private_key is not None:
            from packer.signing import sign_manifest

            sig = sign_manifest(manifest_bytes, private_key)
            prefix += file_header(SIGNATURE_NAME, len(sig), 0o644, mtime) + sig + bytes(padding(len(sig)))
        head = compressor.compress(prefix)
        digest, size = _write_atomically(final, head, body, _scaled(progress, source.total_size, body.tell()))
    _write_text_atomically(final.with_name(final.name + ".sha256"), f"{digest}  {final.name}\n")
    zip_path = None
    if fmt == "zip":
        from packer.zipexport import write_zip

        zip_path = final.with_suffix(".zip")
        write_zip(final, zip_path)
    return PackResult(path=final, sha256=digest, size=size, manifest=manifest,
                      signed=private_key is not None, zip_path=zip_path)


def _compressor(level: int):
    """zstd at `level`, multi-threaded with fixed 2 MiB jobs.

    With nbWorkers >= 1 and a fixed job size the output does not depend on the number
    of threads or on how the input is fed (tests/packer/test_pack.py checks), so the
    thread count is free to follow the machine. Jobs of 2 MiB (instead of 4x the
    window) keep zstd's buffers small: ~55 MB at 8 threads against ~240 MB. Above
    level 9 each worker's match tables take ~80 MB, so one worker keeps RSS flat.
    """
    import zstandard

    threads = min(os.cpu_count() or 1, 8) if level <= 9 else 1
    params = zstandard.ZstdCompressionParameters.from_level(level, threads=threads, job_size=2 << 20,
                                                            write_checksum=True)
    return zstandard.ZstdCompressor(compression_params=params)


def _write_body(source: Source, mtime: int, compressor, body, progress) -> list[FileEntry]:
    import zstandard

    entries: list[FileEntry] = []
    writer = compressor.stream_writer(body, closefd=False, write_size=_BATCH)
    batch = bytearray()
    for f in source.files:
        header = file_header(f.path, f.size, f.mode, mtime)
        if f.size <= SMALL_FILE:
            data = _read_small(f)
            batch += header
            batch += data
            batch += bytes(padding(f.size))
            digest = hashlib.sha256(data).hexdigest()
            if len(batch) >= _BATCH:
                writer.write(batch)
                batch = bytearray()
        else:
            batch += header
            writer.write(batch)
            batch = bytearray()
            digest = _stream_large(f, writer, progress)
            batch += bytes(padding(f.size))
        entries.append(FileEntry(f.path, f.size, f.mode, digest))
        if progress is not None and f.size <= SMALL_FILE:
            progress(f.size)
    batch += END_OF_ARCHIVE
    writer.write(batch)
    writer.flush(zstandard.FLUSH_FRAME)
    return entries


def _read_small(f: SourceFile) -> bytes:
    with open(f.abspath, "rb", buffering=0) as fh:
        data = fh.read(f.size + 1)
    if len(data) != f.size:
        raise SourceError(f.abspath, "changed while it was being packed")
    return data


def _stream_large(f: SourceFile, writer, progress) -> str:
    # zstd's workers compress while this thread hashes: both release the GIL.
    h = hashlib.sha256()
    remaining = f.size
    with open(f.abspath, "rb", buffering=0) as fh:
        while remaining > 0:
            chunk = fh.read(min(BIG_CHUNK, remaining))
            if not chunk:
                break
            writer.write(chunk)
            h.update(chunk)
            remaining -= len(chunk)
            if progress is not None:
                progress(len(chunk))
        if remaining or fh.read(1):
            raise SourceError(f.abspath, "changed while it was being packed")
    return h.hexdigest()


def _scaled(progress: Callable[[int], None] | None, total: int, body_size: int) -> Callable[[int], None] | None:
    """Report `body_size` bytes of writing as `total` bytes of progress."""
    if progress is None:
        return None
    done = 0
    reported = 0

    def advance(n: int) -> None:
        nonlocal done, reported
        done += n
        target = total * done // body_size if body_size else total
        if target > reported:
            progress(target - reported)
            reported = target

    return advance


def _write_atomically(final: Path, head: bytes, body, progress=None) -> tuple[str, int]:
    """Write head + body to `final` via a temporary file; return (sha256, size)."""
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb", buffering=0) as out, BackgroundHasher(head) as hasher:
            out.write(head)
            size = len(head)
            body.seek(0)
            while chunk := body.read(BIG_CHUNK):
                hasher.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(len(chunk))
            digest = hasher.hexdigest()
            os.fchmod(out.fileno(), 0o644)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest, size


def _write_text_atomically(path: Path, text: str) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            os.fchmod(out.fileno(), 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
