"""Seed-shaped zips (service.json + files + checksum.sha256, as seed 001's upload tool makes them),
well-formed and hostile, built with the standard zipfile module or by hand where it refuses."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import struct
import warnings
import zipfile

SERVICE = {
    "service_id": "nmt-m2m100",
    "service_name": "M2M100 NMT Service",
    "version": "1.0.0",
    "service_type": "python",
    "port": 5008,
    "description": "M2M100 machine translation",
    "models": [{"model_id": "m2m100-en-zh", "model_type": "nmt", "version": "1.0.0",
                "path": "models/nmt/m2m100-en-zh"}],
    "dependencies": {"python": ">=3.10", "cuda": "optional"},
    "startup_command": "python nmt_service.py",
    "health_check": {"endpoint": "/health", "method": "GET"},
    "created_at": "2025-12-17T00:00:00Z",
    "sha256": "abc123...",
}
FILES = {
    "nmt_service.py": b"print('nmt')\n",
    "requirements.txt": b"flask\n",
    "README.md": b"# NMT\n",
    "models/nmt/m2m100-en-zh/model.onnx": b"\x00ONNX" * 1000,
}


def checksum_text(files: dict[str, bytes]) -> bytes:
    """sha256sum lines for `files`."""
    return "".join(f"{hashlib.sha256(d).hexdigest()}  {p}\n" for p, d in sorted(files.items())).encode()


def seed_zip(files: dict[str, bytes] | None = None, *, service: dict | None = None, checksum: bytes | None = None,
             with_checksum: bool = True, prefix: str = "", extra: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> bytes:
    """A zip as the seed's pack script makes it: service.json, the files, checksum.sha256."""
    files = dict(FILES if files is None else files)
    manifest = json.dumps({**SERVICE, **(service or {})}, ensure_ascii=False).encode()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of some cases
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(prefix + "service.json", manifest)
            for path, data in files.items():
                zf.writestr(prefix + path, data)
            if with_checksum:
                zf.writestr(prefix + "checksum.sha256",
                            checksum if checksum is not None else checksum_text(files))
            for info, data in extra:
                zf.writestr(info, data)
    return buf.getvalue()


def unix_entry(name: str, mode: int) -> zipfile.ZipInfo:
    """A member whose Unix mode says what kind of file it is (symlink, FIFO, ...)."""
    info = zipfile.ZipInfo(name, date_time=(2025, 12, 17, 0, 0, 0))
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def symlink_zip() -> bytes:
    return seed_zip(extra=[(unix_entry("models/link", stat.S_IFLNK | 0o777), b"/etc/passwd")])


def overlapping_zip() -> bytes:
    """Two central directory records pointing at one local entry (the overlapping-file zip bomb)."""
    data = bytearray(seed_zip(with_checksum=False))
    eocd = data.rindex(b"PK\x05\x06")
    (_, _, _, count, _, cd_size, cd_offset, _) = struct.unpack("<4s4H2LH", data[eocd:eocd + 22])
    central = bytes(data[cd_offset:cd_offset + cd_size])
    # The last record (model.onnx), renamed so the name is unique, pointing at the same data.
    last = central.rindex(b"PK\x01\x02")
    record = bytearray(central[last:])
    name_len = struct.unpack("<H", record[28:30])[0]
    name = bytes(record[46:46 + name_len])
    record[46:46 + name_len] = name[:-1] + b"X"
    new_central = central + bytes(record)
    tail = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count + 1, count + 1, len(new_central), cd_offset, 0)
    return bytes(data[:cd_offset]) + new_central + tail


def lying_size_zip() -> bytes:
    """model.onnx's entry declares fewer bytes than its data expands to."""
    data = bytearray(seed_zip(with_checksum=False))
    name = b"models/nmt/m2m100-en-zh/model.onnx"
    for magic, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = 0
        while (pos := data.find(magic, pos)) != -1:
            name_at = 30 if magic == b"PK\x03\x04" else 46
            n = struct.unpack("<H", data[pos + 26 if magic == b"PK\x03\x04" else pos + 28:][:2])[0]
            if bytes(data[pos + name_at:pos + name_at + n]) == name:
                data[pos + size_at:pos + size_at + 4] = struct.pack("<L", 100)
            pos += 4
    return bytes(data)


def encrypted_zip() -> bytes:
    """README.md marked encrypted (general purpose flag bit 0) in its local and central records."""
    data = bytearray(seed_zip())
    for magic, name_at, len_at, flag_at in ((b"PK\x03\x04", 30, 26, 6), (b"PK\x01\x02", 46, 28, 8)):
        pos = 0
        while (pos := data.find(magic, pos)) != -1:
            n = struct.unpack("<H", data[pos + len_at:pos + len_at + 2])[0]
            if bytes(data[pos + name_at:pos + name_at + n]) == b"README.md":
                data[pos + flag_at] |= 0x1
            pos += 4
    return bytes(data)
