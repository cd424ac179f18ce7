"""A content-addressed blob store on the local filesystem.

Layout under `root`: `blobs/sha256/ab/abcdef…` (read-only files named by their
SHA-256), `tmp/` for writes in progress, `quarantine/` for blobs found corrupt.
A write streams into `tmp/`, is hashed on the way, fsynced, then renamed into
place and the directory fsynced: a blob whose bytes do not match its name is
never visible under `blobs/`. The class is usable on a node as well as on the hub.

`BlobStore` is what the hub's publish, GC and fsck need of any backend; an S3-compatible one
(runtime/hub/s3blobs.py) implements it too, spooling through a local tmp/ the same way.
`path()` is local-only.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from hub_store import ids
from hub_store.errors import BlobCorrupt, BlobDigestMismatch, BlobNotFound

CHUNK = 1 << 20
_BLOB_MODE = 0o444


@dataclass(frozen=True)
class BlobInfo:
    """What the store knows about one blob."""

    digest: str  # bare hex
    size: int
    mtime: float


class BlobSink(Protocol):
    """One blob being written: `write` bytes, then `commit`; leaving a `with` without it aborts."""

    size: int

    def __enter__(self) -> BlobSink: ...
    def __exit__(self, *exc: object) -> None: ...
    def write(self, data: bytes) -> None: ...
    def commit(self, *, lease: Callable[[str], None] | None = None) -> BlobInfo: ...
    def abort(self) -> None: ...


class BlobStore(Protocol):
    """The operations a blob backend provides (the local directory, an S3-compatible bucket).

    Writes are content-addressed and verified: nothing whose bytes do not hash to its name is
    ever visible. Temp files (`temp_file`, `tmp_dir`) are always local: uploads spool there.
    """

    tmp_dir: Path

    def stat(self, digest: str) -> BlobInfo: ...
    def exists(self, digest: str) -> bool: ...
    def open(self, digest: str) -> BinaryIO: ...
    def writer(self, expected: str | None = None) -> BlobSink: ...
    def put_bytes(self, data: bytes, *, lease: Callable[[str], None] | None = None) -> BlobInfo: ...
    def put_chunks(self, chunks: Iterable[bytes], *, expected: str | None = None,
                   lease: Callable[[str], None] | None = None, verified: bool = False) -> BlobInfo: ...
    def adopt(self, temp: Path, digest: str, *, lease: Callable[[str], None] | None = None) -> BlobInfo: ...
    def delete(self, digest: str) -> bool: ...
    def iter_blobs(self) -> Iterator[BlobInfo]: ...
    def hash_file(self, digest: str) -> str: ...
    def quarantine(self, digest: str) -> object | None: ...
    def local_file(self, digest: str) -> AbstractContextManager[Path]: ...
    def temp_file(self, prefix: str = "upload-") -> Path: ...
    def seal(self, temp: Path) -> str: ...
    def iter_temp(self) -> Iterator[tuple[Path, float]]: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore:
    """Blobs as files under `root/blobs/sha256/`, named by their SHA-256."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs" / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.quarantine_dir = self.root / "quarantine"
        for d in (self.blob_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """The file of blob `digest` (bare hex, validated); it may not exist."""
        digest = ids.hex_digest(digest)
        return self.blob_dir / digest[:2] / digest

    def stat(self, digest: str) -> BlobInfo:
        """Size and mtime of a stored blob, or BlobNotFound."""
        try:
            st = self.path(digest).stat()
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        return BlobInfo(digest, st.st_size, st.st_mtime)

    def exists(self, digest: str) -> bool:
        """True when the blob is stored."""
        return self.path(digest).is_file()

    def open(self, digest: str) -> BinaryIO:
        """The blob opened for binary reading, or BlobNotFound."""
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    @contextmanager
    def local_file(self, digest: str) -> Iterator[Path]:
        """The blob as a local file for the length of a `with` (here: the stored file itself)."""
        path = self.path(digest)
        if not path.is_file():
            raise BlobNotFound(digest)
        yield path

    def read_bytes(self, digest: str, *, verify: bool = True) -> bytes:
        """The whole blob in memory (small blobs only), checked against its digest."""
        with self.open(digest) as f:
            data = f.read()
        if verify:
            actual = hashlib.sha256(data).hexdigest()
            if actual != digest:
                raise BlobCorrupt(digest, actual)
        return data

    def hash_file(self, digest: str) -> str:
        """The actual SHA-256 of the stored bytes (for fsck)."""
        h = hashlib.sha256()
        with self.open(digest) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def seal(self, temp: Path) -> str:
        """fsync a finished file in tmp/ and return its SHA-256 (before `adopt`)."""
        h = hashlib.sha256()
        with open(temp, "rb+") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
            os.fsync(f.fileno())
        return h.hexdigest()

    def verify(self, digest: str) -> None:
        """Raise BlobCorrupt if the stored bytes no longer hash to `digest`."""
        actual = self.hash_file(digest)
        if actual != digest:
            raise BlobCorrupt(digest, actual)

    def writer(self, expected: str | None = None) -> BlobWriter:
        """A writer for one new blob; `expected` (hex) is checked on commit."""
        return BlobWriter(self, expected=ids.hex_digest(expected) if expected else None)

    def temp_file(self, prefix: str = "upload-") -> Path:
        """A fresh, unique path in the store's tmp dir (same filesystem as the blobs)."""
        return self.tmp_dir / f"{prefix}{secrets.token_hex(12)}"

    def put_bytes(self, data: bytes, *, lease: Callable[[str], None] | None = None) -> BlobInfo:
        """Store `data`; return its BlobInfo."""
        with self.writer() as w:
            w.write(data)
            return w.commit(lease=lease)

    def put_chunks(self, chunks: Iterable[bytes], *, expected: str | None = None,
                   lease: Callable[[str], None] | None = None, verified: bool = False) -> BlobInfo:
        """Store the concatenation of `chunks`, checked against `expected` if given.

        `verified=True` says the iterator itself checks the bytes against `expected` and
        raises before its last chunk if they differ (as packer's bundle reader does), so
        they are not hashed a second time here.
        """
        with BlobWriter(self, expected=ids.hex_digest(expected) if expected else None,
                        hashing=not (verified and expected)) as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit(lease=lease)

    def adopt(self, temp: Path, digest: str, *, lease: Callable[[str], None] | None = None) -> BlobInfo:
        """Move an already hashed and fsynced file from tmp/ into place as blob `digest`.

        The caller vouches for the digest (it hashed the bytes as they were written).
        """
        digest = ids.hex_digest(digest)
        if lease is not None:
            lease(digest)
        return self._install(temp, digest)

    def _install(self, temp: Path, digest: str) -> BlobInfo:
        final = self.path(digest)
        shard = final.parent
        if not shard.is_dir():
            shard.mkdir(exist_ok=True)
            _fsync_dir(self.blob_dir)
        size = temp.stat().st_size
        try:
            st = final.stat()
        except FileNotFoundError:
            st = None
        now = time.time()
        if st is not None and st.st_size == size:
            # Deduplicated: keep the stored copy; touch it so a running GC sees it as fresh.
            try:
                os.utime(final, (now, now))
            except FileNotFoundError:
                pass  # deleted meanwhile: install ours below
            else:
                temp.unlink()
                return BlobInfo(digest, size, now)
        os.chmod(temp, _BLOB_MODE)
        os.utime(temp, (now, now))
        os.replace(temp, final)
        _fsync_dir(shard)
        return BlobInfo(digest, size, now)

    def delete(self, digest: str) -> bool:
        """Remove a blob; False if it was not there."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def quarantine(self, digest: str) -> Path | None:
        """Move a corrupt blob out of the store (kept for inspection); None if absent."""
        self.quarantine_dir.mkdir(exist_ok=True)
        target = self.quarantine_dir / f"{ids.hex_digest(digest)}.{secrets.token_hex(4)}"
        try:
            os.replace(self.path(digest), target)
        except FileNotFoundError:
            return None
        return target

    def iter_blobs(self) -> Iterator[BlobInfo]:
        """Every stored blob (files with a non-digest name are skipped)."""
        for shard in sorted(self.blob_dir.iterdir()):
            if not shard.is_dir() or len(shard.name) != 2:
                continue
            for entry in os.scandir(shard):
                name = entry.name
                if len(name) != 64 or not name.startswith(shard.name):
                    continue
                try:
                    ids.hex_digest(name)
                    st = entry.stat()
                except (ValueError, FileNotFoundError):
                    continue
                yield BlobInfo(name, st.st_size, st.st_mtime)

    def iter_temp(self) -> Iterator[tuple[Path, float]]:
        """Files in tmp/ with their mtimes (uploads in progress or left by a crash)."""
        for entry in os.scandir(self.tmp_dir):
            try:
                yield Path(entry.path), entry.stat().st_mtime
            except FileNotFoundError:
                continue


class BlobWriter:
    """Streams one blob into tmp/, hashing as it goes; `commit()` makes it visible.

    Used as a context manager: leaving without commit removes the temp file.
    """

    def __init__(self, store: LocalBlobStore, *, expected: str | None = None, hashing: bool = True):
        self.store = store
        self.expected = expected
        self.temp = store.temp_file("blob-")
        self._file: BinaryIO | None = open(self.temp, "xb")
        self._hash = hashlib.sha256() if hashing or expected is None else None
        self.size = 0
        self.committed: BlobInfo | None = None

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def write(self, data: bytes) -> None:
        """Append bytes."""
        assert self._file is not None, "writer is closed"
        self._file.write(data)
        if self._hash is not None:
            self._hash.update(data)
        self.size += len(data)

    @property
    def hexdigest(self) -> str:
        """The SHA-256 of what was written so far (the expected one when not hashing)."""
        return self._hash.hexdigest() if self._hash is not None else self.expected or ""

    def commit(self, *, lease: Callable[[str], None] | None = None) -> BlobInfo:
        """fsync, check the expected digest, call `lease(digest)`, then rename into place."""
        assert self._file is not None, "writer is closed"
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        digest = self.hexdigest
        if self.expected is not None and digest != self.expected:
            raise BlobDigestMismatch("blob", self.expected, digest)
        if lease is not None:
            lease(digest)
        self.committed = self.store._install(self.temp, digest)
        return self.committed

    def abort(self) -> None:
        """Drop the temp file unless committed; idempotent."""
        file, self._file = self._file, None
        try:
            if file is not None:
                file.close()
        except OSError:
            pass  # on a full disk its flush fails; the file is dropped all the same
        finally:
            if self.committed is None:
                self.temp.unlink(missing_ok=True)
