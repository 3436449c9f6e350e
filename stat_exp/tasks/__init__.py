"""Tasks: one file per kind (``lm``, ``glue``, ``squad``, ``embed``) behind ``base.Task``. A task YAML's
``kind`` names the file; adding a kind is one file here (defining ``TASK``) and one YAML in conf/task/."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from ..errors import UserError
from .base import Setting, Task, sample


def kinds() -> list[str]:
    return sorted(p.stem for p in Path(__file__).parent.glob("*.py") if p.stem not in ("__init__", "base"))


def module(kind: str) -> ModuleType:
    if kind not in kinds():
        raise UserError(f"task kind '{kind}' is not supported; kinds: {', '.join(kinds())}")
    return importlib.import_module(f"{__name__}.{kind}")


def build(cfg: dict, tok, setting: Setting) -> Task:
    """The task of a task config (a plain dict with at least name, kind, metric, datasets)."""
    return module(cfg["kind"]).TASK(cfg, tok, setting)


__all__ = ["Setting", "Task", "build", "kinds", "module", "sample"]
