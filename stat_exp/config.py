"""Reading and checking the Hydra config: everything that can be checked from the config and the
conf/ directory is checked here, before any data or weights are read (one-line ``UserError``s)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from .core.cost import KINDS
from .errors import UserError

GROUPS = ("model", "task", "method", "sketch", "logger", "paths", "experiment", "debug")


def check_overrides(argv: list[str], conf_dir: Path) -> None:
    """Unknown group options (``model=nope``) as one line, before Hydra prints its long report."""
    for arg in argv:
        key, eq, value = arg.partition("=")
        key = key.lstrip("+~")
        if not eq or key not in GROUPS or value in ("null", ""):
            continue
        options = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
        for v in value.split(","):
            if v not in options:
                raise UserError(f"unknown {key} '{v}'; choose one of: {', '.join(options)}")


def budgets(raw) -> list[float]:
    """The budget fractions, descending and unique; each must be in (0, 1]."""
    raw = list(raw) if OmegaConf.is_list(raw) or isinstance(raw, (list, tuple)) else [raw]
    out = []
    for b in raw:
        try:
            b = float(b)
        except (TypeError, ValueError):
            raise UserError(f"budget={b!r} is not a number; pass the fraction of FLOPs kept, e.g. budget=0.5") from None
        if not 0 < b <= 1:
            raise UserError(f"budget={b:g} is outside (0, 1]; pass the fraction of FLOPs kept, e.g. budget=0.5")
        out.append(b)
    return sorted(set(out), reverse=True)


def _positive_int(cfg, key: str, example: str) -> int:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise UserError(f"{key}={v!r} must be a positive integer, e.g. {key}={example}")
    return v


def validate(cfg) -> dict:
    """{'budgets', 'methods'} after checking every scalar and name in the config."""
    from . import methods, tasks

    out = {"budgets": budgets(cfg.budget)}
    if cfg.get("budget_kind", "flops") not in KINDS:
        raise UserError(f"budget_kind={cfg.budget_kind!r}; choose one of {', '.join(KINDS)}")
    for key, example in (("calib", "128"), ("seqlen", "2048"), ("calib_batch_size", "4"), ("eval_batch_size", "1")):
        _positive_int(cfg, key, example)
    if cfg.get("eval_windows") is not None:
        _positive_int(cfg, "eval_windows", "40")
    out["methods"] = list(dict.fromkeys([cfg.method.name, *(cfg.get("baselines") or [])]))
    for name in out["methods"]:
        methods.resolve(name)
    tasks.module(cfg.task.kind)
    return out


def output_dir(cfg) -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # called outside @hydra.main (tests, notebooks)
        return Path(cfg.paths.output_dir)


def sweep_group() -> str | None:
    """Runs of one Hydra multirun share a W&B group: the sweep directory's name (None for a single run)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None
    except ValueError:  # HydraConfig not set: not inside a Hydra app
        return None


def method_options(cfg, name: str, uses_sketch: bool) -> dict:
    """The command line's options for the main method (its YAML's, as overridden), and the sketch group's."""
    opts = {}
    if name == cfg.method.name and cfg.method.get("options") is not None:
        opts = OmegaConf.to_container(cfg.method.options, resolve=True)
    if uses_sketch:
        opts.setdefault("sketch", cfg.sketch.kind)
        opts.setdefault("sketch_dim", cfg.sketch.dim)
    return opts
