"""Files that survive kills and share a directory with other jobs.

- ``temp_path(path)``: a name beside ``path`` that carries its owner (host and process id), so that what a
  killed process leaves behind can be told from what a live one is writing (``stale``, ``sweep``).
- ``write_atomic(path, write)``: write to such a name, fsync, rename into place (a reader sees the old file
  or the new one, never a part).
- ``Lock(path)``: an advisory ``flock`` on a file; exclusive or shared, blocking or not. Locks are per open
  file, released when the holder closes it or dies (also under ``kill -9``). flock works on local disks and
  on Linux NFS clients; on a filesystem without it (some Lustre mounts without ``flock``) the lock is a no-op.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Callable

HOST = socket.gethostname().replace(".", "_")
OWNER = re.compile(r"\.(?P<host>[^.]+)-(?P<pid>\d+)\.tmp$|^stat-spill-(?P<shost>[^.]+)-(?P<spid>\d+)-[^-]+$")


def owner() -> str:
    return f"{HOST}-{os.getpid()}"


def temp_path(path: Path, hidden: bool = False) -> Path:
    """``<path>.<host>-<pid>.tmp`` (``.<name>…`` when ``hidden``: a directory that must not look like a model)."""
    path = Path(path)
    return path.with_name(f"{'.' if hidden else ''}{path.name}.{owner()}.tmp")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def stale(directory: Path) -> list[Path]:
    """Temporary files and spill directories in ``directory`` whose owner on this host is no longer running
    (another host's are left alone: their owner may be alive there)."""
    d, out = Path(directory), []
    if not d.is_dir():
        return out
    for p in d.iterdir():
        m = OWNER.search(p.name)
        if m is None:
            continue
        host, pid = (m["host"], m["pid"]) if m["host"] else (m["shost"], m["spid"])
        if host == HOST and int(pid) != os.getpid() and not alive(int(pid)):
            out.append(p)
    return out


def remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def sweep(directory: Path) -> list[Path]:
    """Remove ``stale(directory)``; returns what was removed."""
    found = stale(directory)
    for p in found:
        remove(p)
    return found


def fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to ``temp_path(path)``, fsync it, rename it to ``path``; the temporary file is removed
    when ``write`` fails."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the complete directory ``tmp`` to ``final`` (a directory already there is removed first)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    fsync_dir(final.parent)


class Lock:
    """``flock`` on ``path`` (created if missing, unless not ``create``). ``acquire(shared, wait)`` returns False when ``wait`` is
    False and another holder conflicts; ``release`` (or closing, or the holder's death) drops it."""

    def __init__(self, path: Path, create: bool = True):
        self.path, self.create = Path(path), create
        self.fd: int | None = None

    def acquire(self, shared: bool = False, wait: bool = True) -> bool:
        if self.fd is None:
            if self.create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644) if self.create else os.open(self.path, os.O_RDONLY)
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(self.fd, flags)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
                return True  # no flock on this filesystem: proceed unlocked
            raise
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "Lock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
