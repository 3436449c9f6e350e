"""Reading and checking the Hydra config: everything that can be checked from the config and the
conf/ directory is checked here, before any data or weights are read (one-line ``UserError``s)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from .core.cost import KINDS
from .core.units import ATTN_UNITS
from .errors import UserError

GROUPS = ("model", "task", "method", "sketch", "quant", "recover", "logger", "paths", "experiment", "debug")


def check_overrides(argv: list[str], conf_dir: Path, config_name: str = "config") -> None:
    """Unknown group options (``model=nope``) and unknown keys (``budgte=0.5``, with the closest known key) as
    one line, before Hydra prints its long report."""
    plain = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or arg.startswith(("-", "+", "~", "hydra")) or "/" in key:
            continue
        if key not in GROUPS:
            plain.append(key)
            continue
        if value in ("null", ""):
            continue
        options = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
        for v in value.split(","):
            if v not in options:
                raise UserError(f"unknown {key} '{v}'; choose one of: {', '.join(options)}")
    if plain:
        _check_keys(plain, [a.split(",")[0] for a in argv if a.partition("=")[0] in GROUPS], conf_dir, config_name)


def _check_keys(keys: list[str], group_choices: list[str], conf_dir: Path, config_name: str = "config") -> None:
    """Every ``key`` must exist in the config composed with the chosen groups."""
    import difflib

    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(Path(conf_dir).resolve())):
        cfg = compose(config_name=config_name, overrides=[c for c in group_choices if not c.endswith("=")])
    missing = object()
    for key in keys:
        if OmegaConf.select(cfg, key, default=missing, throw_on_resolution_failure=False) is not missing:
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, throw_on_resolution_failure=False) if parent else cfg
        known = [str(k) for k in node.keys()] if OmegaConf.is_dict(node) else []
        close = difflib.get_close_matches(leaf, known, n=1)
        hint = f"did you mean '{(parent + '.') if parent else ''}{close[0]}'?" if close else \
            f"known keys here: {', '.join(sorted(known))}"
        raise UserError(f"unknown config key '{key}'; {hint} (to add a new key: +{key}=...)")


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


def _positive_int(cfg, key: str, example: str, prefix: str = "") -> int:
    """``cfg[key]``, or a one-line error naming the override ``prefix + key``."""
    v, name = cfg.get(key), prefix + key
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise UserError(f"{name}={v!r} must be a positive integer, e.g. {name}={example}")
    return v


def _check_recover(rec, task_cls, task_name: str) -> None:
    """The ``recover`` group: a known kind; for lora, positive sizes and a language-model task."""
    from . import recover
    from .tasks.base import Task

    kind = rec.get("name", "none")
    if kind not in recover.KINDS:
        raise UserError(f"recover={kind!r}; choose one of {', '.join(recover.KINDS)}")
    if kind == "none":
        return
    for key, example in (("rank", "8"), ("steps", "64"), ("batch", "1")):
        _positive_int(rec, key, example, "recover.")
    if task_cls.recovery_windows is Task.recovery_windows:
        raise UserError(f"recover=lora trains with the next-token loss on a corpus; task {task_name} is not a "
                        "language-model task: use recover=none, or a task such as wikitext2")


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
    if cfg.get("attn_units", "kv_group") not in ATTN_UNITS:
        raise UserError(f"attn_units={cfg.attn_units!r}; choose one of {', '.join(ATTN_UNITS)}")
    out["methods"] = list(dict.fromkeys([cfg.method.name, *(cfg.get("baselines") or [])]))
    task = tasks.module(cfg.task.kind).TASK
    for name in out["methods"]:
        cls, _ = methods.resolve(name)
        options = method_options(cfg, name, cls.uses_sketch)
        methods.build(name, options)  # bad options fail here
        if cls.wants_labels(methods.resolve(name, options)[1]) and not task.has_labels:
            raise UserError(f"method {name} needs labelled batches (gradients of the task loss); task "
                            f"{cfg.task.name} has none: use a language-model, GLUE or SQuAD task")
    _check_recover(cfg.get("recover") or {}, task, cfg.task.name)
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


def command_line() -> str:
    """The command that reproduces this Hydra job (its overrides), or ``python run.py`` outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return "python run.py"
    return " ".join(["python run.py", *HydraConfig.get().overrides.task])
