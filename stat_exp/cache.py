"""The statistics cache: files under ``paths.cache_dir`` holding per-site activation statistics, bounded in
size with least-recently-used eviction, listed and cleared from the command line.

    python -m stat_exp.cache list  [DIR]     # entries, newest use first, with sizes and what they hold
    python -m stat_exp.cache clear [DIR]     # remove every entry

DIR defaults to $STAT_EXP_CACHE or ``cache``. A read marks an entry as used (its mtime).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

PATTERN = "stat-*.pt"


def entries(cache_dir: str | Path) -> list[Path]:
    """Cache files, most recently used first."""
    d = Path(cache_dir)
    return sorted(d.glob(PATTERN), key=lambda p: p.stat().st_mtime, reverse=True) if d.exists() else []


def load(path: Path):
    """The entry at ``path``, memory-mapped (its tensors are read from the file as they are used), marked as
    just used."""
    obj = torch.load(path, weights_only=False, mmap=True)
    os.utime(path)
    return obj


def store(path: Path, obj, max_bytes: int | None) -> None:
    """Write ``obj`` atomically, then evict least-recently-used entries until the cache fits ``max_bytes``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
    if max_bytes is not None:
        evict(path.parent, max_bytes, keep=path)


def evict(cache_dir: Path, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used entries (never ``keep``) while the total exceeds ``max_bytes``."""
    files = entries(cache_dir)
    total, removed = sum(p.stat().st_size for p in files), []
    for p in reversed(files):
        if total <= max_bytes:
            break
        if keep is not None and p == keep:
            continue
        total -= p.stat().st_size
        remove(p)
        removed.append(p)
    return removed


def remove(path: Path) -> None:
    """An entry and its JSON sidecar (the key it was stored under)."""
    path.unlink(missing_ok=True)
    path.with_suffix(".json").unlink(missing_ok=True)


def describe(path: Path) -> str:
    side = path.with_suffix(".json")
    if not side.exists():
        return ""
    k = json.loads(side.read_text())
    return " ".join(f"{name}={k[name]}" for name in ("model", "data", "calib", "seqlen", "seed") if name in k)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stat_exp.cache",
                                 description="List or clear the statistics cache (paths.cache_dir).")
    ap.add_argument("command", choices=["list", "clear"])
    ap.add_argument("dir", nargs="?", default=os.environ.get("STAT_EXP_CACHE", "cache"),
                    help="the cache directory (default: $STAT_EXP_CACHE or ./cache)")
    a = ap.parse_args(argv)
    files = entries(a.dir)
    if a.command == "clear":
        for p in files:
            remove(p)
        print(f"removed {len(files)} entries from {a.dir}")
        return
    total = sum(p.stat().st_size for p in files)
    for p in files:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.stat().st_mtime))
        print(f"{p.stat().st_size / 2**20:9.1f} MiB  {used}  {p.name}  {describe(p)}")
    print(f"{len(files)} entries, {total / 2**20:.1f} MiB in {a.dir}")


if __name__ == "__main__":
    main()
