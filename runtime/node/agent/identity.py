"""Who this node is: its id and its credential, kept in the node's data directory.

    DATA_DIR/node/node_id           16 hex digits, made on first use
    DATA_DIR/node/node_credential   the secret the control plane issued at this node's
                                    first join (owner-only, 0600); from then on the node
                                    connects with it instead of a join token

Both are written atomically (a temporary file, then a rename), so a crash leaves the old
file or the new one, never half of one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

NODE_ID_FILE = "node_id"
CREDENTIAL_FILE = "node_credential"


def node_identity(data_dir: Path) -> str:
    """This node's stable id, created on first use and kept in `data_dir/node_id`."""
    path = data_dir / NODE_ID_FILE
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if len(existing) == 16 and all(c in "0123456789abcdef" for c in existing):
        return existing
    node_id = secrets.token_hex(8)
    _write_atomic(path, node_id + "\n", mode=0o644)
    return node_id


def read_credential(data_dir: Path) -> str:
    """The credential kept in `data_dir/node_credential`, or "" if this node has none yet."""
    try:
        return (data_dir / CREDENTIAL_FILE).read_text().strip()
    except FileNotFoundError:
        return ""


def save_credential(data_dir: Path, credential: str) -> None:
    """Keep the credential the plane issued, readable by this user only."""
    _write_atomic(data_dir / CREDENTIAL_FILE, credential + "\n", mode=0o600)


def _write_atomic(path: Path, text: str, *, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    # Created with its mode (the umask can only narrow it): a secret is never readable by
    # others, not even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
