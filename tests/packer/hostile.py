"""A corpus of crafted hostile bundles, built from code (no binaries in the repository).

Each case is (name, bytes, expected message fragment, options). The tar and zstd
layers are written by hand here, independently of packer.tarfmt, so a bug in the
writer cannot hide the same bug in the reader.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import zstandard

from packer.manifest import FileEntry, parse_source_manifest
from packer.signing import sign_manifest

SERVICE = {"service_id": "evil", "version": "1.0.0", "startup_command": "python a.py",
           "created_at": "2025-12-17T00:00:00Z"}
A = b"print('a')\n"
B = b"b" * 1000


def header(name: str | bytes, size: int, *, mode: int = 0o644, typeflag: bytes = b"0",
           linkname: bytes = b"", magic: bytes = b"ustar\x0000", prefix: bytes = b"",
           bad_checksum: bool = False) -> bytes:
    raw_name = name.encode() if isinstance(name, str) else name
    block = bytearray(512)
    block[0:len(raw_name[:100])] = raw_name[:100]
    block[100:108] = b"%07o\x00" % mode
    block[108:116] = b"0000000\x00"
    block[116:124] = b"0000000\x00"
    block[124:136] = b"%011o\x00" % size
    block[136:148] = b"%011o\x00" % 1765929600
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[157:157 + len(linkname)] = linkname
    block[257:265] = magic
    block[345:345 + len(prefix)] = prefix
    checksum = sum(block) + (1 if bad_checksum else 0)
    block[148:156] = b"%06o\x00 " % checksum
    return bytes(block)


def member(name: str | bytes, data: bytes, **kw) -> bytes:
    size = kw.pop("size", len(data))
    return header(name, size, **kw) + data + bytes(-len(data) % 512)


def pax(records: dict[str, str]) -> bytes:
    body = b""
    for key, value in records.items():
        rec = f" {key}={value}\n".encode()
        n = len(rec) + len(str(len(rec)))
        n += len(str(n)) - len(str(len(rec)))
        body += str(n).encode() + rec
    return header("././@PaxHeader", len(body), typeflag=b"x") + body + bytes(-len(body) % 512)


def manifest_bytes(files: dict[str, bytes], modes: dict[str, int] | None = None, **service) -> bytes:
    modes = modes or {}
    src = parse_source_manifest(json.dumps({**SERVICE, **service}).encode())
    entries = [FileEntry(p, len(d), modes.get(p, 0o644), hashlib.sha256(d).hexdigest()) for p, d in files.items()]
    return src.with_files(entries, SERVICE["created_at"]).canonical_bytes()


FILES = {"a.py": A, "b.bin": B}
GOOD_MANIFEST = manifest_bytes(FILES)
END = bytes(1024)


def tar(*members: bytes, manifest: bytes = GOOD_MANIFEST, end: bytes = END) -> bytes:
    return member("service.json", manifest) + b"".join(members) + end


def good_tar() -> bytes:
    return tar(member("a.py", A), member("b.bin", B))


def zst(data: bytes, **kw) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=True, **kw).compress(data)


@dataclass
class Case:
    name: str
    blob: bytes
    message: str  # a fragment of the one-line error
    verify_kw: dict = field(default_factory=dict)  # extra keyword arguments for verify/unpack
    limits: dict = field(default_factory=dict)


def _bomb() -> bytes:
    # A member whose data is 16 MiB of zeros in ~1 KiB of zstd, where the manifest declares 1000 bytes.
    big = bytes(16 << 20)
    return zst(member("service.json", GOOD_MANIFEST) + member("a.py", A) + header("b.bin", len(B)) + big)


def _window_bomb() -> bytes:
    # Streamed (no content size), so the frame really asks for a 1 GiB window.
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=30)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(out, closefd=False) as w:
        w.write(good_tar())
    return out.getvalue()


def _signed(key, manifest: bytes = GOOD_MANIFEST) -> bytes:
    sig = sign_manifest(manifest, key)
    return zst(member("service.json", manifest) + member("service.json.sig", sig)
               + member("a.py", A) + member("b.bin", B) + END)


def build_cases(signing_key, other_key) -> list[Case]:
    """Every hostile bundle, with the fragment its rejection must mention."""
    good = zst(good_tar())
    tampered = GOOD_MANIFEST.replace(b'"startup_command": "python a.py"', b'"startup_command": "python b.py"')
    sig_for_good = sign_manifest(GOOD_MANIFEST, signing_key)
    ab = {"a.py": A, "A.PY": B}
    cases = [
        Case("absolute-path", zst(tar(member("/etc/passwd", A), member("b.bin", B))), "absolute"),
        Case("dotdot", zst(tar(member("../evil", A), member("b.bin", B))), "'..'"),
        Case("inner-dotdot", zst(tar(member("a/../../evil", A), member("b.bin", B))), "'..'"),
        Case("pax-dotdot", zst(tar(pax({"path": "../../x"}) + member("a.py", A), member("b.bin", B))), "'..'"),
        Case("symlink", zst(tar(member("a.py", b"", typeflag=b"2", linkname=b"/etc/passwd", size=0),
                                member("b.bin", B))), "symbolic link"),
        Case("hardlink", zst(tar(member("a.py", b"", typeflag=b"1", linkname=b"b.bin", size=0),
                                 member("b.bin", B))), "hard link"),
        Case("char-device", zst(tar(member("a.py", b"", typeflag=b"3", size=0), member("b.bin", B))),
             "character device"),
        Case("block-device", zst(tar(member("a.py", b"", typeflag=b"4", size=0), member("b.bin", B))),
             "block device"),
        Case("fifo", zst(tar(member("a.py", b"", typeflag=b"6", size=0), member("b.bin", B))), "FIFO"),
        Case("directory", zst(tar(member("lib", b"", typeflag=b"5", mode=0o755, size=0),
                                  member("a.py", A), member("b.bin", B))), "directory"),
        Case("gnu-longname", zst(tar(member("././@LongLink", b"a.py\x00", typeflag=b"L"), member("a.py", A),
                                     member("b.bin", B))), "GNU long name"),
        Case("global-pax", zst(tar(member("pax_global_header", b"9 a=bc\n", typeflag=b"g"),
                                   member("a.py", A), member("b.bin", B))), "global PAX"),
        Case("pax-unknown-key", zst(tar(pax({"linkpath": "/etc"}) + member("a.py", A), member("b.bin", B))),
             "'linkpath' is not allowed"),
        Case("duplicate", zst(tar(member("a.py", A), member("a.py", A), member("b.bin", B))), "duplicate"),
        Case("extra-member", zst(tar(member("a.py", A), member("b.bin", B), member("c.sh", A))),
             "not in the manifest"),
        Case("missing-member", zst(tar(member("a.py", A))), "missing from the archive"),
        Case("wrong-order", zst(tar(member("b.bin", B), member("a.py", A))), "out of order"),
        Case("size-mismatch", zst(tar(member("a.py", A + b"#"), member("b.bin", B))), "differs from the manifest"),
        Case("sha-mismatch", zst(tar(member("a.py", A.replace(b"a", b"z")), member("b.bin", B))),
             "sha256 mismatch"),
        Case("truncated-end", good[:-3], "truncated"),
        Case("truncated-middle", good[: len(good) // 2], "truncated"),
        Case("corrupt-zstd", _corrupt(good), "corrupt"),
        Case("trailing-garbage", good + b"GARBAGE!", "trailing data"),
        Case("trailing-skippable", good + b"\x50\x2a\x4d\x18\x04\x00\x00\x00abcd", "skippable"),
        Case("trailing-zero-frame", good + zst(bytes(4096)), "trailing data"),
        Case("data-after-end-marker", zst(good_tar() + b"X" * 512), "trailing data"),
        Case("not-zstd", good_tar(), "not a flowctl bundle (.fbundle): it does not start with a zstd frame"),
        Case("zip-not-zstd", b"PK\x03\x04" + bytes(100), "not a flowctl bundle"),
        Case("shorter-than-magic", b"PK", "not a flowctl bundle"),
        Case("empty-file", b"", "not a flowctl bundle (.fbundle): the file is empty"),
        Case("decompression-bomb", _bomb(), "sha256 mismatch"),
        Case("zeros-after-end", zst(good_tar() + bytes(16 << 20)), "trailing data"),
        Case("manifest-bomb", zst(header("service.json", 1 << 30) + bytes(1 << 20)), "limit"),
        Case("window-too-large", _window_bomb(), "window over the limit"),
        Case("case-collision", zst(tar(member("A.PY", B), member("a.py", A),
                                       manifest=_raw_manifest(ab))), "ignoring case"),
        Case("non-canonical-manifest", zst(tar(member("a.py", A), member("b.bin", B),
                                               manifest=json.dumps(json.loads(GOOD_MANIFEST)).encode())),
             "canonical"),
        Case("manifest-absolute-path", zst(tar(member("/abs", A), manifest=_raw_manifest({"/abs": A}))),
             "absolute"),
        Case("setuid-mode", zst(tar(member("a.py", A, mode=0o4755), member("b.bin", B))), "mode"),
        Case("world-writable-mode", zst(tar(member("a.py", A, mode=0o777), member("b.bin", B))), "mode"),
        Case("manifest-mode", zst(tar(member("a.py", A), member("b.bin", B), manifest=manifest_bytes(
            FILES, modes={"a.py": 0o4755}))), "is not 0o644 or 0o755"),
        Case("first-not-manifest", zst(member("a.py", A) + member("service.json", GOOD_MANIFEST) + END),
             "first member"),
        Case("bad-checksum", zst(member("service.json", GOOD_MANIFEST) + header("a.py", len(A), bad_checksum=True)
                                 + A + bytes(-len(A) % 512) + member("b.bin", B) + END), "checksum"),
        Case("gnu-magic", zst(tar(member("a.py", A, magic=b"ustar  \x00"), member("b.bin", B))), "magic"),
        Case("nonzero-padding", zst(member("service.json", GOOD_MANIFEST) + header("a.py", len(A)) + A
                                    + b"\x01" * (-len(A) % 512) + member("b.bin", B) + END), "padding"),
        Case("late-signature", zst(tar(member("a.py", A), member("service.json.sig", sig_for_good),
                                       member("b.bin", B))), "appears again"),
        Case("future-format", zst(tar(member("a.py", A), member("b.bin", B),
                                      manifest=GOOD_MANIFEST.replace(b'"bundle_format": 1', b'"bundle_format": 2'))),
             "not supported"),
        Case("wrong-digest", good, "sha256 mismatch", verify_kw={"expected_sha256": "0" * 64}),
        Case("unsigned-but-required", good, "not signed", verify_kw={"require_signature": True}),
        Case("untrusted-signer", _signed(other_key), "not among the trusted keys", verify_kw={"trust": True}),
        Case("tampered-signed-manifest", zst(member("service.json", tampered)
                                             + member("service.json.sig", sig_for_good)
                                             + member("a.py", A) + member("b.bin", B) + END),
             "does not verify", verify_kw={"trust": True}),
        Case("garbage-signature", zst(member("service.json", GOOD_MANIFEST) + member("service.json.sig", b"{}")
                                      + member("a.py", A) + member("b.bin", B) + END),
             "malformed signature", verify_kw={"trust": True}),
        Case("total-over-limit", good, "limit", limits={"max_total_bytes": 500}),
        Case("file-over-limit", good, "limit", limits={"max_file_bytes": 999}),
        Case("too-many-files", good, "limit", limits={"max_files": 1}),
        Case("manifest-over-limit", good, "limit", limits={"max_manifest_bytes": 100}),
    ]
    return cases


def _raw_manifest(files: dict[str, bytes]) -> bytes:
    """Canonical bytes for a file table the packer itself would refuse to write."""
    base = json.loads(GOOD_MANIFEST)
    base["files"] = [{"path": p, "size": len(d), "mode": 0o644, "sha256": hashlib.sha256(d).hexdigest()}
                     for p, d in sorted(files.items())]
    return (json.dumps(base, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def _corrupt(blob: bytes) -> bytes:
    # Flip bytes inside the compressed payload of the first (manifest-bearing) frame.
    data = bytearray(blob)
    for i in range(40, 60):
        data[i] ^= 0x5A
    return bytes(data)
