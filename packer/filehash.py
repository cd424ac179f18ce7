"""A regular file's SHA-256 computed by a child process, beside a reader using the file.

`flowctl verify` hashes the bundle file and, separately, every member it decodes: in one
process the file's hash was a third thread contending for the GIL with the decoder and the
members' hasher (docs/performance.md). A child process reads the same file again from the
page cache on a core of its own, as the C pipeline (`tee >(openssl dgst) | zstd -dc`)
does. It reads the same inode through a descriptor of its own (`/proc/self/fd`), and the
file's size, ctime and mtime must be the same before and after, so the digest names the
bytes the reader checked; a file changed meanwhile is an error, not a wrong digest.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from packer.errors import BundleError

# -I -S: no site-packages, no user paths; the child imports hashlib only (~20 ms).
_CHILD = ("import hashlib, sys; f = open(0, 'rb', buffering=0); "
          "sys.stdout.write(hashlib.file_digest(f, 'sha256').hexdigest())")
MIN_SIZE = 8 << 20  # below this the child's start-up costs more than the thread it saves
MIN_RATE = 20 << 20  # bytes/s: the deadline for the child is generous for any disk


class FileHashProcess:
    """The SHA-256 of the file open as `fd`, computed by a child; `hexdigest()` waits for it."""

    def __init__(self, fd: int, proc: subprocess.Popen[bytes], st: os.stat_result) -> None:
        self._fd = fd
        self._proc = proc
        self._st = st

    @classmethod
    def start(cls, fd: int) -> FileHashProcess | None:
        """Start hashing the regular file open as `fd`; None where that is not possible or not
        worth it (not a regular file, small, no /proc, FLOWCTL_VERIFY_FILE_HASH=thread)."""
        if os.environ.get("FLOWCTL_VERIFY_FILE_HASH") == "thread":
            return None
        st = os.fstat(fd)
        if not _is_regular(st) or st.st_size < MIN_SIZE:
            return None
        try:
            own = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if not os.path.samestat(os.fstat(own), st):
                return None
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _CHILD], stdin=own,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError:
            return None
        finally:
            os.close(own)
        return cls(fd, proc, st)

    def hexdigest(self, size_read: int) -> str:
        """The digest, once the reader has read `size_read` bytes of the file (all of it).

        Error handling: BundleError if the file changed while it was read, or the child failed.
        """
        timeout = 60 + self._st.st_size / MIN_RATE
        try:
            out, _ = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise BundleError(f"hashing the bundle file took over {timeout:.0f} s") from None
        now = os.fstat(self._fd)
        if (now.st_size, now.st_mtime_ns, now.st_ctime_ns) != (self._st.st_size, self._st.st_mtime_ns,
                                                               self._st.st_ctime_ns) \
                or size_read != now.st_size:
            raise BundleError("the bundle file changed while it was being verified")
        digest = out.decode("ascii", "replace").strip()
        if self._proc.returncode != 0 or len(digest) != 64:
            raise BundleError(f"hashing the bundle file failed (exit status {self._proc.returncode})")
        return digest

    def close(self) -> None:
        """Stop the child if it still runs (the verify failed before its end)."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _is_regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)
