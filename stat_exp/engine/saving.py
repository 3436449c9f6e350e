"""Save and reload pruned models despite per-layer widths.

``finalize(model)`` records per-layer unit counts in the config (``stat_layers``, ``stat_consumer_bias``),
switches ``model_type`` to ``stat_<type>`` and the model's class to a subclass whose ``__init__`` builds every
layer at its recorded width. After ``stat_exp.register()`` (``register_auto_classes``),
``AutoModelFor….from_pretrained(dir)`` and ``Stat<Class>.from_pretrained(dir)`` load it natively.
"""
from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path

from torch import nn

from ..adapters import ADAPTERS, get_adapter
from ..adapters.base import Adapter
from ..core.plan import SitePlan
from .surgery import apply_site, ensure_bias

log = logging.getLogger(__name__)

_PRUNED_CLASSES: dict[str, type] = {}


def _resize_to_config(model: nn.Module) -> None:
    """Rebuild every layer at the widths recorded in ``config.stat_layers`` (weights come later)."""
    cfg, adapter = model.config, get_adapter(model)
    sizes, biases = getattr(cfg, "stat_layers", None), getattr(cfg, "stat_consumer_bias", None)
    if sizes is None:
        return
    for i, layer in enumerate(adapter.layers(model)):
        for j, (kind, site) in enumerate(adapter.sites(layer).items()):
            apply_site(site, SitePlan(keep=list(range(sizes[i][j]))))
            if biases and biases[i][j]:
                ensure_bias(adapter.sites(layer)[kind].consumer_linear)
        adapter.after_resize(layer)


def _pruned_class(base: type) -> type:
    name = "Stat" + base.__name__
    if name not in _PRUNED_CLASSES:
        def __init__(self, config, *args, **kwargs):
            base.__init__(self, config, *args, **kwargs)
            _resize_to_config(self)
        _PRUNED_CLASSES[name] = type(name, (base,), {"__init__": __init__, "__module__": __name__})
    return _PRUNED_CLASSES[name]


def finalize(model: nn.Module, adapter: Adapter | None = None) -> nn.Module:
    """Record the current per-layer widths in the config and make the model a registered Stat class."""
    adapter = adapter or get_adapter(model)
    sizes, biases = [], []
    for layer in adapter.layers(model):
        sites = adapter.sites(layer)
        sizes.append([s.n_units for s in sites.values()])
        biases.append([s.consumer_linear.bias is not None for s in sites.values()])
    cfg = model.config
    if not cfg.model_type.startswith("stat_"):
        cfg.__class__ = _config_class(type(cfg))
    cfg.stat_layers, cfg.stat_consumer_bias = sizes, biases
    if not type(model).__name__.startswith("Stat"):
        model.__class__ = _pruned_class(type(model))
        model.config_class = type(cfg)
    return model


_CONFIG_CLASSES: dict[str, type] = {}


def _config_class(base: type) -> type:
    mt = "stat_" + base.model_type
    if mt not in _CONFIG_CLASSES:
        _CONFIG_CLASSES[mt] = type("Stat" + base.__name__, (base,), {"model_type": mt, "__module__": __name__})
    return _CONFIG_CLASSES[mt]


def register_auto_classes() -> None:
    """Register stat_<type> configs and their model classes with the transformers Auto classes."""
    import transformers
    from transformers import AutoConfig

    for adapter in ADAPTERS.values():
        for mt in adapter.model_types:
            try:
                base_cfg = transformers.AutoConfig.for_model(mt).__class__
            except Exception:  # pragma: no cover - family absent from this transformers build
                continue
            cfg_cls = _config_class(base_cfg)
            try:
                AutoConfig.register(cfg_cls.model_type, cfg_cls)
            except ValueError:
                pass  # already registered
            prefix = base_cfg.__name__[: -len("Config")]
            module = importlib.import_module(f"transformers.models.{mt}")
            for auto_name, suffix in adapter.auto_classes.items():
                base = getattr(module, prefix + suffix, None)
                if base is None:
                    continue
                cls = _pruned_class(base)
                cls.config_class = cfg_cls
                try:
                    getattr(transformers, auto_name).register(cfg_cls, cls)
                except ValueError:
                    pass


def save_pruned(d: Path, model: nn.Module, tok, plan) -> None:
    """``save_pretrained`` of a pruned model and its tokenizer into ``d``, with its plan as plan.json."""
    model.save_pretrained(d)
    tok.save_pretrained(d)
    (Path(d) / "plan.json").write_text(json.dumps(plan.to_json()))
    log.info("saved %s (reload: `import stat_exp; stat_exp.register()`, then AutoModel….from_pretrained)", d)
