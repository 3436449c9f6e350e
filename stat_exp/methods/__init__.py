"""Method registry. A method is a class (``CLASSES``) and a named option set: ``conf/method/<name>.yaml``
holds ``name``, ``base`` (the class; default: the name) and ``options``, so a recipe such as ``stat_paper``
is configuration, not code, and a baseline listed by name gets the same options as when it is the main
method."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .base import Context, Method
from .kwon import Kwon
from .simple import FLAP, Magnitude, Random, WandaSP
from .stat import STAT

CLASSES: dict[str, type[Method]] = {m.name: m for m in (STAT, Random, Magnitude, WandaSP, FLAP, Kwon)}
CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "method"


def recipes(conf_dir: Path = CONF_DIR) -> dict[str, dict]:
    """name -> {'base': class name, 'options': dict} for every method YAML."""
    from omegaconf import OmegaConf

    out = {}
    for p in sorted(conf_dir.glob("*.yaml")):
        c = OmegaConf.to_container(OmegaConf.load(p), resolve=True)
        out[c.get("name", p.stem)] = {"base": c.get("base", c.get("name", p.stem)), "options": c.get("options") or {}}
    return out


def names() -> list[str]:
    return sorted(set(CLASSES) | set(recipes()))


def resolve(name: str, options: dict | None = None) -> tuple[type[Method], dict]:
    """(class, options) of a named method: its recipe's options, then ``options`` on top."""
    spec = recipes().get(name, {"base": name, "options": {}})
    if spec["base"] not in CLASSES:
        raise UserError(f"unknown method '{name}'; choose one of: {', '.join(names())}")
    return CLASSES[spec["base"]], {**spec["options"], **(options or {})}


def build(name: str, options: dict | None = None, **more) -> Method:
    """The method ``name`` with its recipe's options, then ``options`` and ``more`` on top."""
    cls, opts = resolve(name, {**(options or {}), **more})
    method = cls(**opts)
    method.name = name
    return method


__all__ = ["CLASSES", "Context", "Method", "build", "names", "resolve"]
