"""The OpenAI Files store behind `/v1/files`: a tenant's uploads and its batches' result files.

Metadata in SQLite (`DATA_DIR/openai/files.db`), contents under `DATA_DIR/openai/files/ID`
(written to a temporary name, then renamed, so a file is listed only once it is whole). A file
belongs to the tenant that uploaded it; another tenant's id is "not found" (404), never 403.
`validate_batch_input` checks an upload of purpose `batch` line by line.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub_store import make_private_database, sql

BATCH_URLS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
PURPOSES = ("batch", "batch_output")
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    filename   TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    lines      INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_tenant ON files (tenant, created_at);
"""


def _schema_1(tx: sql.Tx) -> None:
    for statement in sql.split_statements(SCHEMA):
        tx.execute(tx.ddl(statement))
    if tx.dialect == "postgresql":  # listed newest first, ties in insertion order, as SQLite's rowid
        sql.add_rowid(tx, "files")


MIGRATIONS = sql.Migrations("files", (_schema_1,))
_COLUMNS = "id, tenant, filename, purpose, bytes, lines, created_at"  # not PostgreSQL's rowid


class BatchInputError(ValueError):
    """An upload that is not a valid batch input; the message names the line."""


@dataclass(frozen=True)
class FileRecord:
    """One stored file."""

    id: str
    tenant: str
    filename: str
    purpose: str
    bytes: int
    lines: int
    created_at: int

    def public(self) -> dict[str, Any]:
        """OpenAI's file object."""
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "status_details": None, "expires_at": None}


def validate_batch_input(data: bytes) -> int:
    """The number of requests in a batch input file, or BatchInputError naming the first bad line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchInputError(f"the file is not UTF-8 text (byte {exc.start})") from None
    seen: dict[str, int] = {}
    count = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise BatchInputError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise BatchInputError(f"{where}: expected a JSON object")
        custom_id = doc.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise BatchInputError(f"{where}: custom_id must be a non-empty string")
        if custom_id in seen:
            raise BatchInputError(f"{where}: custom_id {custom_id[:100]!r} is a duplicate of line {seen[custom_id]}")
        seen[custom_id] = number
        if doc.get("method") != "POST":
            raise BatchInputError(f"{where}: method must be \"POST\"")
        if doc.get("url") not in BATCH_URLS:
            raise BatchInputError(f"{where}: url must be one of {', '.join(BATCH_URLS)}, "
                                  f"not {str(doc.get('url'))[:100]!r}")
        if not isinstance(doc.get("body"), dict):
            raise BatchInputError(f"{where}: body must be a JSON object")
        count += 1
    if not count:
        raise BatchInputError("the file has no requests")
    return count


def input_urls(data: bytes) -> set[str]:
    """The urls a (validated) batch input file's lines name."""
    return {json.loads(line)["url"] for line in data.decode("utf-8").splitlines() if line.strip()}


class FileStore:
    """Files per tenant (see the module docstring); synchronous, call it from a thread."""

    def __init__(self, root: Path, state: sql.State | None = None):
        """Files under ROOT/files; their rows in ROOT/files.db, or in the plane's PostgreSQL state."""
        self.root = root
        (root / "files").mkdir(parents=True, exist_ok=True)
        where = sql.located(root / "files.db", state)
        if isinstance(where, Path):
            make_private_database(where)
        self._lock = threading.Lock()
        self._db = sql.open_store(where, MIGRATIONS, "openai/files.db")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def temp_path(self) -> Path:
        """A fresh temporary path beside the stored files (an upload is written there first)."""
        return self.root / "files" / f".upload-{secrets.token_hex(8)}"

    def add(self, tenant: str, filename: str, purpose: str, src: Path, *, lines: int = 0) -> FileRecord:
        """Store the file written at `src` (moved, not copied)."""
        record = FileRecord(f"file-{secrets.token_hex(12)}", tenant, filename, purpose, src.stat().st_size,
                            lines, int(time.time()))
        os.replace(src, self.root / "files" / record.id)
        with self._lock:
            self._db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (record.id, tenant, filename, purpose, record.bytes, lines, record.created_at))
        return record

    def add_bytes(self, tenant: str, filename: str, purpose: str, data: bytes, *, lines: int = 0) -> FileRecord:
        """Store `data` as a new file."""
        tmp = self.temp_path()
        tmp.write_bytes(data)
        return self.add(tenant, filename, purpose, tmp, lines=lines)

    def get(self, tenant: str, file_id: str) -> FileRecord | None:
        """The tenant's file `file_id`, or None (also when it is another tenant's)."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM files WHERE id=? AND tenant=?", (file_id, tenant)).fetchone()
        return FileRecord(*row) if row is not None else None

    def read(self, tenant: str, file_id: str) -> bytes | None:
        """The tenant's file's contents, or None."""
        record = self.get(tenant, file_id)
        if record is None:
            return None
        try:
            return (self.root / "files" / record.id).read_bytes()
        except FileNotFoundError:
            return None

    def list(self, tenant: str, *, purpose: str | None = None, after: str | None = None,
             limit: int = 10000) -> list[FileRecord]:
        """The tenant's files, newest first; `after`: those listed after that id."""
        query, args = f"SELECT {_COLUMNS} FROM files WHERE tenant=?", [tenant]
        if purpose is not None:
            query, args = query + " AND purpose=?", [*args, purpose]
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at DESC, rowid DESC", args).fetchall()
        records = [FileRecord(*r) for r in rows]
        if after is not None:
            ids = [r.id for r in records]
            records = records[ids.index(after) + 1:] if after in ids else []
        return records[:limit]

    def delete(self, tenant: str, file_id: str) -> bool:
        """Remove the tenant's file; False if it had none of that id."""
        with self._lock:
            deleted = self._db.execute("DELETE FROM files WHERE id=? AND tenant=?", (file_id, tenant)).rowcount
        if deleted:
            (self.root / "files" / file_id).unlink(missing_ok=True)
        return bool(deleted)
