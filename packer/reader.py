"""Read a bundle as a stream, trusting nothing: `open_bundle`.

The compressed bytes go through a FrameWalker (truncation, trailing data,
skippable frames) and a zstd decoder with a bounded window; the decoded bytes
are counted against a budget: before the manifest is read, what a manifest and a
signature may take; after it, exactly what the manifest's members need. The tar
stream must then be, in order: service.json (canonical), service.json.sig
(optional), every file of the manifest in manifest order, two zero blocks, and
nothing more. Each file's size and SHA-256 are checked as its chunks are consumed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from packer.errors import BundleError, DigestMismatch, LimitExceeded, NotABundle, PackerError
from packer.limits import Limits
from packer.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    FileEntry,
    Manifest,
    check_path,
    parse_bundle_manifest,
)
from packer.stream import RAW_CHUNK, Decoded, RawInput
from packer.tarfmt import (
    BLOCK,
    MAX_PAX_BYTES,
    Header,
    member_overhead,
    padding,
    parse_header,
    parse_pax,
)

CHUNK = 1 << 20


class BundleReader:
    """An open bundle: `.manifest`, `.manifest_bytes`, `.signature`, then `iter_files()` once."""

    def __init__(self, fileobj: BinaryIO, limits: Limits, observer: Callable[[memoryview], None] | None,
                 digest: bool = False):
        import zstandard

        self.limits = limits
        self._raw = RawInput(fileobj, observer, digest)
        decoder = zstandard.ZstdDecompressor(max_window_size=limits.max_window_size)
        # zstandard reads from any object with read(n) returning a buffer; its stubs ask for IO[bytes].
        self._reader = decoder.stream_reader(
            self._raw, read_size=RAW_CHUNK, read_across_frames=True)  # type: ignore[arg-type]
        prefix_budget = limits.max_manifest_bytes + limits.max_signature_bytes + 8 * BLOCK + 2 * MAX_PAX_BYTES
        self._tar = Decoded(self._reader, prefix_budget, self._raw_eof, limits.max_window_size,
                            self._raw.walker.check_started)
        self._pending: Header | None = None
        self._seen: set[str] = set()
        self._iterated = False
        self._pool: ThreadPoolExecutor | None = None
        self._failure: DigestMismatch | None = None  # the first deferred digest check that failed
        self._chunk_slot = -1
        self._hash_batch: list[tuple[Any, memoryview, FileEntry]] = []  # small files of one buffer
        self._hash_batch_slot = -1
        self._tar.before_fill.append(self._flush_hashes)
        self._known = {MANIFEST_NAME, SIGNATURE_NAME}
        try:
            self.manifest_bytes = self._read_member(MANIFEST_NAME, limits.max_manifest_bytes)
            self.manifest: Manifest = parse_bundle_manifest(self.manifest_bytes)
            self._check_limits()
            self._known.update(f.path for f in self.manifest.files)
            self.signature: bytes | None = None
            header = self._next_header()
            if header is not None and header.name == SIGNATURE_NAME:
                self.signature = self._member_data(header, limits.max_signature_bytes)
                header = self._next_header()
            self._pending = header
        except BaseException:
            self.close()
            raise
        self._tar.budget = self._tar.consumed + self._expected_rest()

    def _raw_eof(self) -> None:
        if self._raw.eof or not self._raw.read(1):
            self._raw.walker.finish()

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the decoder and the hashing threads (the file object stays the caller's)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._tar.close()
        self._raw.close()  # also wakes a decoding thread waiting for raw bytes
        self._tar.join()
        self._tar.ring.abandon()
        self._reader.close()

    @property
    def raw_size(self) -> int:
        """Compressed bytes read so far."""
        return self._raw.size

    def file_sha256(self) -> str:
        """The SHA-256 of the bundle file as read so far (opened with `digest=True`)."""
        return self._raw.hexdigest()

    def hold(self, future: Future) -> None:
        """Keep the chunk `iter_files(views=True)` yielded last alive until `future` completes."""
        self._tar.hold(self._chunk_slot, future)

    @property
    def chunk_slot(self) -> int:
        """The buffer the chunk `iter_files(views=True)` yielded last lies in."""
        return self._chunk_slot

    def before_fill(self, flush: Callable[[], None]) -> None:
        """Call `flush()` before any buffer is refilled and at the end of `iter_files(views=True)`.

        A consumer batching work on chunks of one buffer (`chunk_slot`) submits it there and
        `hold_slot`s it, or earlier when a chunk from another buffer arrives.
        """
        self._tar.before_fill.append(flush)

    def hold_slot(self, slot: int, future: Future) -> None:
        """Keep buffer `slot` alive until `future` completes."""
        self._tar.hold(slot, future)

    def _check_limits(self) -> None:
        m, lim = self.manifest, self.limits
        if len(m.files) > lim.max_files:
            raise LimitExceeded(f"bundle has {len(m.files)} files (limit {lim.max_files})")
        if m.total_size > lim.max_total_bytes:
            raise LimitExceeded(f"bundle declares {m.total_size} bytes (limit {lim.max_total_bytes})")
        for f in m.files:
            if f.size > lim.max_file_bytes:
                raise LimitExceeded(f"declares {f.size} bytes (limit {lim.max_file_bytes})", member=f.path)

    def _expected_rest(self) -> int:
        # What remains of the decoded stream (the pending header already read) plus one byte
        # to observe the end: anything beyond is a bomb or trailing data.
        rest = sum(member_overhead(f.path, f.size) + f.size for f in self.manifest.files)
        if self._pending is not None:
            rest -= self._tar.consumed - self._header_start
        return rest + 2 * BLOCK + 1

    def _next_header(self) -> Header | None:
        """The next member's header (PAX resolved), or None at the end-of-archive marker."""
        self._header_start = self._tar.consumed
        block = self._tar.exact(BLOCK, "a tar header")
        if block == bytes(BLOCK):
            if self._tar.exact(BLOCK, "the end-of-archive marker") != bytes(BLOCK):
                raise BundleError("corrupt end-of-archive marker")
            return None
        header = parse_header(block)
        if header.typeflag == b"x":
            if header.size > MAX_PAX_BYTES:
                raise BundleError(f"PAX header of {header.size} bytes (limit {MAX_PAX_BYTES})")
            records = parse_pax(self._tar.exact(header.size + padding(header.size), "a PAX header")[:header.size])
            block = self._tar.exact(BLOCK, "a tar header")
            if block == bytes(BLOCK):
                raise BundleError("PAX header not followed by a member")
            header = parse_header(block)
            if header.typeflag == b"x":
                raise BundleError("two PAX headers in a row")
            header = Header(name=records.get("path", header.name),
                            size=int(records["size"]) if "size" in records else header.size,
                            mode=header.mode, typeflag=header.typeflag)
        if header.name not in self._known:  # manifest paths are already checked
            try:
                check_path(header.name)
            except ValueError as exc:
                raise BundleError(f"unsafe member name: {exc}") from None
        if header.name in self._seen:
            raise BundleError("duplicate entry", member=header.name)
        self._seen.add(header.name)
        return header

    def _read_member(self, name: str, limit: int) -> bytes:
        header = self._next_header()
        if header is None:
            raise BundleError(f"empty archive (no {name})")
        if header.name != name:
            raise BundleError(f"first member is {header.name!r}, not {name!r}")
        return self._member_data(header, limit)

    def _member_data(self, header: Header, limit: int) -> bytes:
        if header.size > limit:
            raise LimitExceeded(f"is {header.size} bytes (limit {limit})", member=header.name)
        if header.mode != 0o644:
            raise BundleError(f"mode {oct(header.mode)} (expected 0o644)", member=header.name)
        data = self._tar.exact(header.size, repr(header.name))
        self._skip_padding(header)
        return data

    def _skip_padding(self, header: Header) -> None:
        pad = padding(header.size)
        if pad and self._tar.exact(pad, repr(header.name)) != bytes(pad):
            raise BundleError("non-zero padding after member data", member=header.name)

    def iter_files(self, *, views: bool = False) -> Iterator[tuple[FileEntry, Iterator[bytes]]]:
        """Each file in manifest order with an iterator of its chunks (consume before the next).

        By default each chunk is `bytes` and a file's digest is checked before its last chunk
        is yielded. With `views=True` (verify, unpack) chunks are memoryviews into reused
        buffers, valid until the next chunk is asked for unless passed to `hold`, and digests
        are checked on a worker thread: a mismatch raises at a later chunk, or at the end of
        the iteration at the latest; the consumer must not act on the files before then.
        """
        if self._iterated:
            raise PackerError("iter_files() can be called only once per open bundle")
        self._iterated = True
        if self._raw.reads_ahead:
            self._tar.decode_ahead()  # the budget is final now
        try:
            yield from self._iter_files(views)
            if views:
                self._settle()
        except PackerError:
            if views:
                self._settle()  # an earlier member's digest mismatch is the error to report
            raise

    def _settle(self) -> None:
        for flush in self._tar.before_fill:
            flush()
        if self._pool is not None:
            self._pool.submit(int).result()
        self._tar.ring.drain()
        if self._failure is not None:
            raise self._failure

    def _iter_files(self, views: bool) -> Iterator[tuple[FileEntry, Iterator[Any]]]:
        expected = {f.path: i for i, f in enumerate(self.manifest.files)}
        for index, entry in enumerate(self.manifest.files):
            header = self._pending
            self._pending = None
            if header is None and index > 0:
                header = self._next_header()
            if header is None:
                raise BundleError(f"{entry.path!r} is in the manifest but missing from the archive")
            self._check_member(header, entry, expected, index)
            chunks = self._deferred_chunks(header, entry) if views else self._chunks(header, entry)
            yield entry, chunks
            for _ in chunks:  # drain what the caller left unread: still verified
                pass
        header = self._pending if not self.manifest.files else self._next_header()
        self._pending = None
        if header is not None:
            what = "is not in the manifest" if header.name not in expected else "appears out of order"
            raise BundleError(what, member=header.name)
        if not self._tar.at_end():
            raise BundleError("trailing data after the end-of-archive marker")
        self._raw_eof()

    def _check_member(self, header: Header, entry: FileEntry, expected: dict[str, int], index: int) -> None:
        if header.name != entry.path:
            if header.name in (MANIFEST_NAME, SIGNATURE_NAME):
                raise BundleError("appears again after the start of the bundle", member=header.name)
            if header.name not in expected:
                raise BundleError("is not in the manifest", member=header.name)
            if expected[header.name] < index:
                raise BundleError("duplicate entry", member=header.name)
            raise BundleError(f"appears out of order (expected {entry.path!r})", member=header.name)
        if header.size != entry.size:
            raise BundleError(f"size {header.size} differs from the manifest's {entry.size}", member=entry.path)
        if header.mode != entry.mode:
            raise BundleError(f"mode {oct(header.mode)} differs from the manifest's {oct(entry.mode)}",
                              member=entry.path)

    def _chunks(self, header: Header, entry: FileEntry) -> Iterator[bytes]:
        # Large files are hashed in a worker thread (hashlib releases the GIL) while this
        # thread decompresses the next chunk and the caller handles this one (a copy).
        h = hashlib.sha256()
        pending: Future[None] | None = None
        pool = self._hash_pool() if entry.size > CHUNK else None
        remaining = entry.size
        what = repr(entry.path)
        while remaining:
            view = self._tar.some(min(remaining, CHUNK), what)
            remaining -= len(view)
            if pool is None:
                h.update(view)
            else:
                pending = pool.submit(h.update, view)
                self._tar.hold(self._tar.slot, pending)
            chunk = bytes(view)
            if not remaining:
                if pending is not None:
                    pending.result()  # one worker, in order: every earlier chunk is hashed too
                self._finish_member(header, entry, h)
            yield chunk
        if entry.size == 0:
            self._finish_member(header, entry, h)

    def _deferred_chunks(self, header: Header, entry: FileEntry) -> Iterator[memoryview]:
        # Every chunk is hashed on the worker thread, several in flight; the last one's task
        # also compares the digest, so this thread never waits for the hash.
        h = hashlib.sha256()
        pool = self._hash_pool()
        remaining = entry.size
        what = repr(entry.path)
        if not remaining:
            self._finish_member(header, entry, h)
        while remaining:
            view = self._tar.some(min(remaining, CHUNK), what)
            slot = self._tar.slot
            remaining -= len(view)
            if len(view) == entry.size:  # a whole small file: hashed with the others of this buffer
                if slot != self._hash_batch_slot:
                    self._flush_hashes()
                    self._hash_batch_slot = slot
                self._hash_batch.append((h, view, entry))
                self._skip_padding(header)
            elif remaining:
                self._tar.hold(slot, pool.submit(h.update, view))
            else:
                self._tar.hold(slot, pool.submit(self._update_and_check, h, view, entry))
                self._skip_padding(header)
            self._chunk_slot = slot
            yield view

    def _update_and_check(self, h: Any, view: memoryview, entry: FileEntry) -> None:
        if self._failure is not None:
            return
        h.update(view)
        actual = h.hexdigest()
        if actual != entry.sha256:
            self._failure = DigestMismatch(repr(entry.path), entry.sha256, actual)
            raise self._failure

    def _flush_hashes(self) -> None:
        # One task for the small files of one buffer: a task per file cost more in futures
        # and thread hand-offs than the hashing itself.
        if self._hash_batch:
            batch, self._hash_batch = self._hash_batch, []
            self._tar.hold(self._hash_batch_slot, self._hash_pool().submit(self._check_all, batch))

    def _check_all(self, batch: list[tuple[Any, memoryview, FileEntry]]) -> None:
        for h, view, entry in batch:
            self._update_and_check(h, view, entry)

    def _hash_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundle-sha256")
        return self._pool

    def _finish_member(self, header: Header, entry: FileEntry, h) -> None:
        actual = h.hexdigest()
        if actual != entry.sha256:
            raise DigestMismatch(repr(entry.path), entry.sha256, actual)
        self._skip_padding(header)


def open_bundle(fileobj: BinaryIO, *, limits: Limits = Limits(),
                observer: Callable[[memoryview], None] | None = None, source: str | None = None,
                digest: bool = False) -> BundleReader:
    """Open a bundle stream (never seeks); reads and checks the manifest and signature member.

    `observer`, if given, sees every compressed chunk in order, as a memoryview valid only
    during the call. With `digest=True` the file's SHA-256 is computed on a worker thread
    from the same reads (`file_sha256()` once iteration is done).

    Error handling: NotABundle for input that is not a bundle at all, naming `source` if given
    (a file's path); other BundleErrors for a corrupt or hostile one.
    """
    try:
        return BundleReader(fileobj, limits, observer, digest)
    except NotABundle as exc:
        if source is None or exc.source is not None:
            raise
        raise NotABundle(exc.reason, source=source) from None
