"""Progress of long loops, quiet enough to read: on a terminal a transient bar with an ETA; in a log file
(no terminal: Slurm, CI, ``> run.log``) one line every ``every`` seconds with the ETA; in both, one closing
line per stage with its elapsed time (``ppl wikitext2: 10 windows in 21.3 s (2.13 s/window)``)."""
from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

log = logging.getLogger("stat_exp")
T = TypeVar("T")


def progress(items: Iterable[T], desc: str, unit: str = "step", total: int | None = None,
             every: float = 30.0) -> Iterator[T]:
    """Yield ``items``, reporting progress of the stage ``desc`` (``unit``: what one item is)."""
    total = len(items) if total is None and hasattr(items, "__len__") else total
    units = unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")
    tty = sys.stderr.isatty()
    start = last = time.perf_counter()
    done = 0
    for item in tqdm(items, desc=desc, total=total, unit=unit, leave=False, disable=not tty):
        yield item
        done += 1
        now = time.perf_counter()
        if not tty and total and now - last > every and done < total:
            rate = (now - start) / done
            log.info("%s: %d/%d %s, %.0f s elapsed, ETA %.0f s", desc, done, total, units, now - start,
                     rate * (total - done))
            last = now
    spent = time.perf_counter() - start
    log.info("%s: %d %s in %.1f s (%.2f s/%s)", desc, done, units, spent, spent / max(done, 1), unit)
