"""The cache under ``paths.cache_dir``: per-site activation statistics (``stat-<key>.pt``, bounded in size with
least-recently-used eviction) and dense rows (``dense-<key>.json``: a dense model's scores, reused by every job
of a sweep that evaluates the same model, task and protocol). Shared by the jobs of a sweep:

- ``fetch`` computes an entry under its lock (``<entry>.lock``); a second job asking for the same entry waits,
  then reads what the first wrote instead of computing it again;
- a job reading an entry holds a shared lock on it until it ends (``release_all``), and eviction and
  ``clear`` skip entries that are held;
- entries are written atomically (``files.write_atomic``); temporary and spill files carry their owner's
  host and process id, and those of dead processes are removed at the next ``fetch``, ``list`` or ``clear``.

    python -m stat_exp.cache list  [DIR]     # entries, newest use first, with sizes and what they hold
    python -m stat_exp.cache clear [DIR]     # remove every entry no running job holds

DIR defaults to $STAT_EXP_CACHE or ``cache``. A read marks an entry as used (its mtime).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import torch

from . import files

log = logging.getLogger(__name__)
PATTERNS = ("stat-*.pt", "dense-*.json")
_held: dict[Path, files.Lock] = {}  # shared locks on the entries this process reads


def entries(cache_dir: str | Path) -> list[Path]:
    """Cache entries, most recently used first."""
    d = Path(cache_dir)
    if not d.exists():
        return []
    found = [p for pat in PATTERNS for p in d.glob(pat)]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def hold(path: Path) -> None:
    """A shared lock on the entry ``path`` until ``release_all`` (or the process ends)."""
    if path not in _held:
        lock = files.Lock(path, create=False)
        lock.acquire(shared=True)
        _held[path] = lock


def release_all() -> None:
    """Drop this process's shared locks (the end of a run: its entries may be evicted again)."""
    for lock in _held.values():
        lock.release()
    _held.clear()


def in_use(path: Path) -> bool:
    """Whether a process computes or reads the entry ``path`` (this process's own reads count too)."""
    if path in _held:
        return True
    for f in (path.with_suffix(".lock"), path):  # computing: the entry's lock file; reading: the entry itself
        lock = files.Lock(f, create=False)
        try:
            if not lock.acquire(wait=False):
                return True
        except FileNotFoundError:
            pass
        finally:
            lock.release()
    return False


def fetch(path: Path, compute: Callable[[], object], save: Callable[[object, Path], None],
          read: Callable[[Path], object], max_bytes: int | None = None):
    """The entry at ``path``: ``read`` when present; else ``compute()``, ``save(obj, tmp)`` atomically, evict
    beyond ``max_bytes``, then ``read``. One process computes an entry at a time; the others wait for it. The
    entry stays held (shared) by this process until ``release_all``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path.parent)
    lock = files.Lock(path.with_suffix(".lock"))
    if not lock.acquire(wait=False):
        log.info("waiting: another job is computing cache entry %s", path.name)
        lock.acquire()
    try:
        if path.exists():
            log.info("from cache %s", path)
        else:
            obj = compute()
            files.write_atomic(path, lambda tmp: save(obj, tmp))
            if max_bytes is not None:
                evicted(evict(path.parent, max_bytes, keep=path), max_bytes)
        hold(path)
    finally:
        lock.release()
    obj = read(path)
    os.utime(path)
    return obj


def load(path: Path):
    """A statistics entry, memory-mapped (its tensors are read from the file as they are used)."""
    return torch.load(path, weights_only=False, mmap=True)


def evict(cache_dir: Path, max_bytes: int, keep: Path | None = None) -> list[tuple[Path, int]]:
    """Remove the least recently used statistics entries (never ``keep``, never one in use) while the total
    exceeds ``max_bytes``; returns each removed entry with its size in bytes."""
    stats = [p for p in entries(cache_dir) if p.suffix == ".pt"]
    total, removed = sum(p.stat().st_size for p in stats), []
    for p in reversed(stats):
        if total <= max_bytes:
            break
        if (keep is not None and p == keep) or in_use(p):
            continue
        size = p.stat().st_size
        total -= size
        remove(p)
        removed.append((p, size))
    return removed


def evicted(removed: list[tuple[Path, int]], max_bytes: int) -> None:
    """One line naming what an eviction removed (a bound smaller than one entry evicts the others silently
    otherwise, e.g. a small model's job with the default bound after a large model's)."""
    if removed:
        log.info("cache over paths.cache_max_gb=%.3g: evicted %s (%.2f GB, least recently used); raise "
                 "paths.cache_max_gb to keep them", max_bytes / 2**30, ", ".join(p.name for p, _ in removed),
                 sum(n for _, n in removed) / 2**30)


def remove(path: Path) -> None:
    """An entry, its JSON sidecar (the key it was stored under) and its lock file."""
    path.unlink(missing_ok=True)
    for suffix in (".json", ".lock"):
        if path.with_suffix(suffix) != path:
            path.with_suffix(suffix).unlink(missing_ok=True)


def sweep(cache_dir: Path) -> list[Path]:
    """Remove the temporary and spill files of dead processes (``files.stale``), logging what went."""
    gone = files.sweep(Path(cache_dir))
    if gone:
        log.info("removed %d leftovers of stopped jobs from %s: %s", len(gone), cache_dir,
                 ", ".join(p.name for p in gone))
    return gone


def describe(path: Path) -> str:
    side = path.with_suffix(".json")
    if not side.exists():
        return ""
    k = json.loads(side.read_text())
    k = k.get("key", k)
    name_of = lambda v: v.get("name", "?") if isinstance(v, dict) else v  # noqa: E731 - a dense key's configs
    return " ".join(f"{name}={name_of(k[name])}" for name in ("model", "task", "data", "calib", "seqlen", "seed",
                                                             "device") if name in k)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stat_exp.cache",
                                 description="List or clear the cache (paths.cache_dir).")
    ap.add_argument("command", choices=["list", "clear"])
    ap.add_argument("dir", nargs="?", default=os.environ.get("STAT_EXP_CACHE", "cache"),
                    help="the cache directory (default: $STAT_EXP_CACHE or ./cache)")
    a = ap.parse_args(argv)
    gone = sweep(Path(a.dir))
    if gone:
        print(f"removed {len(gone)} leftovers of stopped jobs")
    found = entries(a.dir)
    if a.command == "clear":
        busy = [p for p in found if in_use(p)]
        for p in found:
            if p not in busy:
                remove(p)
        for lock in Path(a.dir).glob("*.lock"):  # lock files of entries never completed (a killed computation)
            if not any(lock.with_suffix(x).exists() for x in (".pt", ".json")) and not in_use(lock.with_suffix(".pt")):
                lock.unlink(missing_ok=True)
        print(f"removed {len(found) - len(busy)} entries from {a.dir}"
              + (f"; kept {len(busy)} that running jobs hold" if busy else ""))
        return
    total = sum(p.stat().st_size for p in found)
    for p in found:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.stat().st_mtime))
        print(f"{p.stat().st_size / 2**20:9.1f} MiB  {used}  {p.name}  {describe(p)}")
    print(f"{len(found)} entries, {total / 2**20:.1f} MiB in {a.dir}")


if __name__ == "__main__":
    main()
