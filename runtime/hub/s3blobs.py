"""The hub's blobs in an S3-compatible bucket: `S3BlobStore`, a `hub_store.BlobStore`.

Keys mirror the local layout under the URL's prefix: `PREFIX/blobs/sha256/ab/abcdef…` (bytes
named by their SHA-256) and `PREFIX/quarantine/…` for blobs found corrupt. Every write is
hashed as it streams and checked before the object becomes visible: a blob up to a part's
size is one PUT sent after its hash matched; a larger one is a multipart upload completed
only once the hash of all its parts matched (aborted otherwise, and on any failure, so no
object, whole or half, ever appears under the final key). A write whose digest is not known
in advance spools to the local tmp/ first. Each PUT and part also carries Content-MD5, so the
store refuses bytes damaged on the way.

Temp files are local: the data dir's store (`spool`) lends its tmp/. Every method blocks;
the hub calls them in its bounded worker threads (HubState.run). Downloads do not pass
through here: the hub answers them with a presigned GET (`presign_get`).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

from hub_store import ids
from hub_store.blobs import CHUNK, BlobInfo, LocalBlobStore
from hub_store.errors import BlobCorrupt, BlobDigestMismatch, BlobNotFound
from runtime.hub.s3client import S3Location, call, check_bucket, make_client

PART_SIZE = 8 << 20  # S3's minimum part is 5 MiB; 8 MiB x 10,000 parts = 80 GB before parts grow
PARTS_PER_STEP = 1000  # every 1,000 parts the part size grows by PART_SIZE (S3 allows 10,000 parts)
Lease = Callable[[str], None]
STAT_CACHE_S = 10.0
STAT_CACHE_SIZE = 10_000


def part_size(index: int, base: int = PART_SIZE) -> int:
    """The size of part `index` (0-based): growing, so a stream of unknown length fits 10,000 parts."""
    return base * (1 + index // PARTS_PER_STEP)


def _md5(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class S3BlobStore:
    """Blobs as objects `PREFIX/blobs/sha256/ab/<sha256>` of one bucket."""

    def __init__(self, location: S3Location, spool: LocalBlobStore, *, client: Any = None,
                 part_bytes: int = PART_SIZE):
        self.location = location
        self.spool = spool
        self.tmp_dir = spool.tmp_dir
        self.client = client if client is not None else make_client(location)
        self.part_bytes = part_bytes
        self._base = location.prefix
        self._recent: dict[str, tuple[BlobInfo, float]] = {}

    @classmethod
    def connect(cls, url: str, spool: LocalBlobStore, **kwargs: Any) -> S3BlobStore:
        """Parse `s3://bucket/prefix`, build the client and check the bucket answers (one-line errors)."""
        from runtime.hub.s3client import parse_s3_url

        store = cls(parse_s3_url(url), spool, **kwargs)
        check_bucket(store.client, store.location)
        return store

    # -- names -------------------------------------------------------------------------------

    def key(self, digest: str) -> str:
        """The object key of blob `digest` (validated)."""
        digest = ids.hex_digest(digest)
        return f"{self._base}blobs/sha256/{digest[:2]}/{digest}"

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        return call(self.location, what, fn, Bucket=self.location.bucket, **kwargs)

    # -- reading -----------------------------------------------------------------------------

    def stat(self, digest: str) -> BlobInfo:
        """Size and modification time of a stored blob, or BlobNotFound."""
        try:
            head = self._call("HEAD of a blob", self.client.head_object, Key=self.key(digest))
        except KeyError:
            raise BlobNotFound(digest) from None
        return BlobInfo(ids.hex_digest(digest), int(head["ContentLength"]), head["LastModified"].timestamp())

    def stat_recent(self, digest: str, max_age_s: float = STAT_CACHE_S) -> BlobInfo:
        """`stat`, answered from memory for `max_age_s` after the store last said so.

        For the hub's redirects: a rollout to many nodes asks for the same blobs at once, and
        their bytes never change (a blob GC deleted meanwhile is a 404 from the store instead).
        """
        now = time.monotonic()
        hit = self._recent.get(digest)
        if hit is not None and now - hit[1] < max_age_s:
            return hit[0]
        info = self.stat(digest)
        if len(self._recent) >= STAT_CACHE_SIZE:
            self._recent.clear()  # crude, bounded, and a miss costs one HEAD
        self._recent[digest] = (info, now)
        return info

    def exists(self, digest: str) -> bool:
        """True when the blob is stored."""
        try:
            self.stat(digest)
        except BlobNotFound:
            return False
        return True

    def open(self, digest: str) -> BinaryIO:
        """The blob's bytes as a stream (from the store, not verified here), or BlobNotFound."""
        try:
            got = self._call("GET of a blob", self.client.get_object, Key=self.key(digest))
        except KeyError:
            raise BlobNotFound(digest) from None
        return cast(BinaryIO, got["Body"])

    def read_bytes(self, digest: str, *, verify: bool = True) -> bytes:
        """The whole blob in memory (small blobs only), checked against its digest."""
        with self.open(digest) as body:
            data = body.read()
        if verify and (actual := hashlib.sha256(data).hexdigest()) != digest:
            raise BlobCorrupt(digest, actual)
        return data

    def hash_file(self, digest: str) -> str:
        """The actual SHA-256 of the stored bytes (for fsck: they are read from the store)."""
        h = hashlib.sha256()
        with self.open(digest) as body:
            while chunk := body.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()

    @contextmanager
    def local_file(self, digest: str) -> Iterator[Path]:
        """The blob downloaded into tmp/ and checked, for the length of a `with`."""
        temp = self.spool.temp_file("s3-get-")
        try:
            h = hashlib.sha256()
            with self.open(digest) as body, open(temp, "xb") as out:
                while chunk := body.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            if (actual := h.hexdigest()) != digest:
                raise BlobCorrupt(digest, actual)
            yield temp
        finally:
            temp.unlink(missing_ok=True)

    def presign_get(self, digest: str, ttl_s: float, *, disposition: str | None = None,
                    content_type: str | None = None) -> str:
        """A GET URL of the blob valid for `ttl_s` seconds, signed with this store's credentials."""
        from runtime.hub.s3client import unavailable

        params: dict[str, Any] = {"Bucket": self.location.bucket, "Key": self.key(digest)}
        if content_type:
            params["ResponseContentType"] = content_type
        if disposition:
            params["ResponseContentDisposition"] = disposition
        with unavailable(self.location, "signing of a download URL"):
            return str(self.client.generate_presigned_url("get_object", Params=params,
                                                           ExpiresIn=max(1, int(ttl_s))))

    def iter_blobs(self) -> Iterator[BlobInfo]:
        """Every stored blob (keys that are not a digest in its shard are skipped)."""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.location.bucket, Prefix=f"{self._base}blobs/sha256/")
        it = iter(pages)
        while True:
            try:
                page = self._call_next(it)
            except StopIteration:
                return
            for item in page.get("Contents", []):
                shard, _, name = item["Key"][len(self._base) + len("blobs/sha256/"):].partition("/")
                if len(name) != 64 or not name.startswith(shard) or len(shard) != 2:
                    continue
                try:
                    ids.hex_digest(name)
                except ValueError:
                    continue
                yield BlobInfo(name, int(item["Size"]), item["LastModified"].timestamp())

    def _call_next(self, it: Iterator[dict[str, Any]]) -> dict[str, Any]:
        from runtime.hub.s3client import unavailable

        with unavailable(self.location, "listing of the blobs"):
            return next(it)

    # -- writing -----------------------------------------------------------------------------

    def writer(self, expected: str | None = None) -> S3BlobWriter:
        """A writer for one new blob; `expected` (hex) is checked before the object is visible."""
        return S3BlobWriter(self, expected=ids.hex_digest(expected) if expected else None)

    def put_bytes(self, data: bytes, *, lease: Lease | None = None) -> BlobInfo:
        """Store `data`; return its BlobInfo."""
        with S3BlobWriter(self, expected=hashlib.sha256(data).hexdigest()) as w:
            w.write(data)
            return w.commit(lease=lease)

    def put_chunks(self, chunks: Iterable[bytes], *, expected: str | None = None,
                   lease: Lease | None = None, verified: bool = False) -> BlobInfo:
        """Store the concatenation of `chunks`, checked against `expected` if given.

        `verified=True` says the iterator itself raises before its last chunk when the bytes
        differ from `expected` (packer's bundle reader): they are then not hashed again.
        """
        with S3BlobWriter(self, expected=ids.hex_digest(expected) if expected else None,
                          hashing=not (verified and expected)) as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit(lease=lease)

    def adopt(self, temp: Path, digest: str, *, lease: Lease | None = None) -> BlobInfo:
        """Upload a local file of tmp/ as blob `digest` (hashed again on the way) and remove it."""
        digest = ids.hex_digest(digest)
        try:
            with S3BlobWriter(self, expected=digest) as w, open(temp, "rb") as f:
                while chunk := f.read(CHUNK):
                    w.write(chunk)
                return w.commit(lease=lease)
        finally:
            temp.unlink(missing_ok=True)

    def delete(self, digest: str) -> bool:
        """Remove a blob; False if it was not there."""
        self._recent.pop(digest, None)
        if not self.exists(digest):
            return False
        self._call("DELETE of a blob", self.client.delete_object, Key=self.key(digest))
        return True

    def quarantine(self, digest: str) -> str | None:
        """Move a corrupt blob to `PREFIX/quarantine/` (kept for inspection); None if absent."""
        import secrets

        self._recent.pop(digest, None)
        if not self.exists(digest):
            return None
        target = f"{self._base}quarantine/{ids.hex_digest(digest)}.{secrets.token_hex(4)}"
        source = {"Bucket": self.location.bucket, "Key": self.key(digest)}
        self._call("copy into quarantine", self.client.copy, CopySource=source, Key=target)
        self._call("DELETE of a blob", self.client.delete_object, Key=self.key(digest))
        return target

    # -- the local spool ---------------------------------------------------------------------

    def temp_file(self, prefix: str = "upload-") -> Path:
        """A fresh path in the local tmp/."""
        return self.spool.temp_file(prefix)

    def seal(self, temp: Path) -> str:
        """fsync a finished local temp file and return its SHA-256 (before `adopt`)."""
        return self.spool.seal(temp)

    def iter_temp(self) -> Iterator[tuple[Path, float]]:
        """Files in the local tmp/ (uploads in progress or left by a crash)."""
        return self.spool.iter_temp()

    def stale_uploads(self, older_than: float) -> list[tuple[str, str]]:
        """(key, upload id) of multipart uploads under the prefix begun before `older_than` (epoch s)."""
        found = self._call("listing of multipart uploads", self.client.list_multipart_uploads,
                           Prefix=self._base)
        return [(u["Key"], u["UploadId"]) for u in found.get("Uploads", [])
                if u["Initiated"].timestamp() < older_than]

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort one multipart upload (its parts are dropped by the store)."""
        try:
            self._call("abort of an upload", self.client.abort_multipart_upload, Key=key, UploadId=upload_id)
        except KeyError:
            pass  # already gone


class S3BlobWriter:
    """Streams one blob to the bucket, hashing as it goes; `commit()` makes it visible.

    With an expected digest the bytes go straight up in parts (a multipart upload begun with
    the first full part); without one they spool to a local temp file, hashed, and go up on
    commit. Leaving a `with` without commit aborts: the upload and the temp file are dropped.
    """

    def __init__(self, store: S3BlobStore, *, expected: str | None = None, hashing: bool = True):
        self.store = store
        self.expected = expected
        self.size = 0
        self.committed: BlobInfo | None = None
        self._hash = hashlib.sha256() if hashing or expected is None else None
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._temp: Path | None = None
        self._file: BinaryIO | None = None
        if expected is None:
            self._temp = store.temp_file("s3-put-")
            self._file = open(self._temp, "xb")

    def __enter__(self) -> S3BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    @property
    def hexdigest(self) -> str:
        """The SHA-256 of what was written so far (the expected one when not hashing)."""
        return self._hash.hexdigest() if self._hash is not None else self.expected or ""

    def write(self, data: bytes) -> None:
        """Append bytes (a full part goes up at once)."""
        if self._hash is not None:
            self._hash.update(data)
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._buf += data
        while len(self._buf) >= part_size(len(self._parts), self.store.part_bytes) * 2:
            self._send_part(part_size(len(self._parts), self.store.part_bytes))

    def _send_part(self, n: int) -> None:
        """Upload the first `n` buffered bytes as the next part (the upload begins with the first)."""
        key = self.store.key(str(self.expected))
        if self._upload_id is None:
            started = self.store._call("start of a multipart upload", self.store.client.create_multipart_upload,
                                       Key=key)
            self._upload_id = started["UploadId"]
        body = bytes(self._buf[:n])
        number = len(self._parts) + 1
        done = self.store._call("upload of a part", self.store.client.upload_part, Key=key,
                                UploadId=self._upload_id, PartNumber=number, Body=body, ContentMD5=_md5(body))
        self._parts.append({"PartNumber": number, "ETag": done["ETag"]})
        del self._buf[:n]

    def commit(self, *, lease: Lease | None = None) -> BlobInfo:
        """Check the digest, call `lease(digest)`, then make the object visible (complete or PUT)."""
        if self.committed is not None:
            return self.committed
        digest = self.hexdigest
        if self.expected is not None and digest != self.expected:
            raise BlobDigestMismatch("blob", self.expected, digest)
        if self._file is not None:  # spooled: its digest is known now, upload it
            self._file.close()
            self._file = None
            assert self._temp is not None
            self.committed = self.store.adopt(self._temp, digest, lease=lease)
            return self.committed
        if lease is not None:
            lease(digest)
        store, key = self.store, self.store.key(digest)
        if self._upload_id is None:
            if not self._same_exists(digest):
                body = bytes(self._buf)
                store._call("PUT of a blob", store.client.put_object, Key=key, Body=body, ContentMD5=_md5(body))
        else:
            if self._buf:
                self._send_part(len(self._buf))
            store._call("completion of a multipart upload", store.client.complete_multipart_upload, Key=key,
                        UploadId=self._upload_id, MultipartUpload={"Parts": self._parts})
            self._upload_id = None
        self._buf = bytearray()
        self.committed = BlobInfo(digest, self.size, _now())
        return self.committed

    def _same_exists(self, digest: str) -> bool:
        try:
            return self.store.stat(digest).size == self.size
        except BlobNotFound:
            return False

    def abort(self) -> None:
        """Drop the upload in progress and the temp file unless committed; idempotent."""
        file, self._file = self._file, None
        upload, self._upload_id = self._upload_id, None
        try:
            if file is not None:
                file.close()
        except OSError:
            pass  # a full disk cannot flush; the file goes anyway
        finally:
            if self._temp is not None and self.committed is None:
                self._temp.unlink(missing_ok=True)
            if upload is not None and self.committed is None:
                try:
                    self.store.abort_upload(self.store.key(str(self.expected)), upload)
                except Exception:  # best effort: GC aborts stale uploads later
                    pass


def _now() -> float:
    return time.time()

