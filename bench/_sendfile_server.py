"""The peer bench/hub.py uses where nginx is not installed: a bare os.sendfile file server.

    python bench/_sendfile_server.py ROOT PORT

One thread per connection, keep-alive, GET of a file directly under ROOT answered with
`Content-Length` and `os.sendfile` (nginx's data path for a large file: the kernel
copies, user space does nothing per byte); anything else is a 404. It sets the floor a
zero-copy server reaches on this machine; for small GETs it is a Python server, so
nginx (C, epoll) answers several times more requests per second than this.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path


def serve(conn: socket.socket, root: Path) -> None:
    """Answer requests on `conn` until the client closes it."""
    buf = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            path = root / parts[1].decode().lstrip("/") if len(parts) == 3 else None
            if parts[0] != b"GET" or path is None or path.parent != root or not path.is_file():
                conn.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                continue
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                             b"content-length: %d\r\n\r\n" % size)
                offset = 0
                while offset < size:
                    offset += os.sendfile(conn.fileno(), f.fileno(), offset, size - offset)


def main() -> None:
    """Listen on 127.0.0.1:PORT and serve ROOT until killed."""
    root, port = Path(sys.argv[1]).resolve(), int(sys.argv[2])
    with socket.create_server(("127.0.0.1", port)) as server:
        while True:
            conn, _ = server.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=serve, args=(conn, root), daemon=True).start()


if __name__ == "__main__":
    main()
