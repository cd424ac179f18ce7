"""The tar dialect of a bundle: deterministic POSIX ustar headers, PAX only where needed.

Writing: regular files only, uid/gid 0, empty uname/gname, one fixed mtime, mode
0644 or 0755. A PAX extended header ('x') carries the path when it does not fit
ustar's name/prefix fields or is not ASCII, and the size when it is 8 GiB or more.

Reading is stricter than tarfile: a header must carry the POSIX magic and a correct
checksum; the only member types are regular files and PAX headers with `path`
and `size` records; anything else (links, devices, FIFOs, directories, GNU or
global headers) is refused by the caller with the reason `parse_header` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

from packer.errors import BundleError

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)
_USTAR_MAGIC = b"ustar\x0000"
_MAX_OCTAL_SIZE = 8**11 - 1
_PAX_NAME = b"././@PaxHeader"
# PAX header data is bounded: a path of at most 1024 bytes and a size.
MAX_PAX_BYTES = 4096
_TYPE_NAMES = {
    b"1": "hard link", b"2": "symbolic link", b"3": "character device", b"4": "block device",
    b"5": "directory", b"6": "FIFO", b"7": "contiguous file", b"g": "global PAX header",
    b"L": "GNU long name", b"K": "GNU long link name", b"S": "GNU sparse file",
}


def padding(size: int) -> int:
    """Bytes of zero padding after `size` bytes of member data."""
    return -size % BLOCK


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\x00" % (width - 1, value)


def _header(name: bytes, prefix: bytes, size: int, mode: int, mtime: int, typeflag: bytes) -> bytes:
    block = bytearray(BLOCK)
    block[0:len(name)] = name
    block[100:108] = _octal(mode, 8)
    block[108:116] = _octal(0, 8)
    block[116:124] = _octal(0, 8)
    block[124:136] = _octal(size, 12)
    block[136:148] = _octal(mtime, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[257:265] = _USTAR_MAGIC
    block[329:337] = _octal(0, 8)
    block[337:345] = _octal(0, 8)
    block[345:345 + len(prefix)] = prefix
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def _split_ustar(path: str) -> tuple[bytes, bytes] | None:
    """(name, prefix) when `path` fits ustar's fields as ASCII, else None."""
    if not path.isascii():
        return None
    raw = path.encode()
    if len(raw) <= 100:
        return raw, b""
    cut = raw.rfind(b"/", 0, 156)
    while cut > 0:
        if len(raw) - cut - 1 <= 100:
            return raw[cut + 1:], raw[:cut]
        cut = raw.rfind(b"/", 0, cut)
    return None


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body) + len(str(len(body)))
    if len(str(length)) != len(str(len(body))):
        length += 1
    return str(length).encode() + body


def file_header(path: str, size: int, mode: int, mtime: int) -> bytes:
    """The header block(s) for a regular file: a ustar block, after a PAX header if needed."""
    split = _split_ustar(path)
    records = b""
    if split is None:
        records += _pax_record("path", path)
        split = (path.encode()[:100].decode("utf-8", "ignore").encode(), b"")
    if size > _MAX_OCTAL_SIZE:
        records += _pax_record("size", str(size))
    ustar = _header(split[0], split[1], min(size, _MAX_OCTAL_SIZE), mode, mtime, b"0")
    if not records:
        return ustar
    pax = _header(_PAX_NAME, b"", len(records), 0o644, mtime, b"x")
    return pax + records + bytes(padding(len(records))) + ustar


def member_overhead(path: str, size: int) -> int:
    """Bytes a member adds to the tar stream beyond its data (headers and padding)."""
    return len(file_header(path, size, 0o644, 0)) + padding(size)


@dataclass(frozen=True)
class Header:
    """One parsed header block."""

    name: str
    size: int
    mode: int
    typeflag: bytes


def _parse_octal(field: bytes, what: str) -> int:
    text = field.rstrip(b"\x00 ").lstrip(b" ")
    if not text:
        return 0
    if not all(48 <= c <= 55 for c in text):
        raise BundleError(f"corrupt tar header: {what} field {bytes(field)!r} is not octal")
    return int(text, 8)


def parse_header(block: bytes) -> Header:
    """Parse and check one 512-byte header block (not the all-zero end block)."""
    stored = _parse_octal(block[148:156], "checksum")
    actual = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != actual:
        raise BundleError("corrupt tar header: checksum mismatch")
    if block[257:265] != _USTAR_MAGIC:
        raise BundleError(f"unsupported tar header magic {bytes(block[257:265])!r} (expected POSIX ustar)")
    typeflag = bytes(block[156:157])
    if typeflag not in (b"0", b"\x00", b"x"):
        kind = _TYPE_NAMES.get(typeflag, f"type {typeflag!r}")
        raise BundleError(f"{kind} members are not allowed (a bundle holds regular files only)",
                          member=_name(block))
    return Header(name=_name(block), size=_parse_octal(block[124:136], "size"),
                  mode=_parse_octal(block[100:108], "mode"), typeflag=typeflag)


def _name(block: bytes) -> str:
    name = bytes(block[0:100]).split(b"\x00", 1)[0]
    prefix = bytes(block[345:500]).split(b"\x00", 1)[0]
    raw = prefix + b"/" + name if prefix else name
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"member name {raw!r} is not valid UTF-8") from None


def parse_pax(data: bytes) -> dict[str, str]:
    """Parse PAX records; only `path` and `size` are allowed, each at most once."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0 or not data[pos:space].isdigit():
            raise BundleError("corrupt PAX header: bad record length")
        length = int(data[pos:space])
        record = data[space + 1:pos + length]
        if length <= space - pos or pos + length > len(data) or not record.endswith(b"\n"):
            raise BundleError("corrupt PAX header: record overruns its header")
        key, sep, value = record[:-1].partition(b"=")
        if not sep:
            raise BundleError("corrupt PAX header: record without '='")
        try:
            key_text, value_text = key.decode("utf-8"), value.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError("corrupt PAX header: record is not valid UTF-8") from None
        if key_text not in ("path", "size"):
            raise BundleError(f"PAX record {key_text!r} is not allowed (only path and size)")
        if key_text in records:
            raise BundleError(f"PAX record {key_text!r} appears twice")
        if key_text == "size" and not (value_text.isdigit() and value_text.isascii()):
            raise BundleError(f"PAX size {value_text!r} is not a number")
        records[key_text] = value_text
        pos += length
    return records
