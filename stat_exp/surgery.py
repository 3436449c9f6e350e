"""Apply a PrunePlan to a model: physically slice the Linears (or mask them, for tests), and make the
pruned model save and reload with ``from_pretrained`` despite per-layer widths.

Saving: ``finalize(model)`` records per-layer unit counts in the config (``stat_layers``,
``stat_consumer_bias``), switches ``model_type`` to ``stat_<type>`` and the model's class to a
registered subclass whose ``__init__`` builds every layer at its recorded width. After
``import stat_exp``, ``AutoModelFor….from_pretrained(dir)`` and ``Stat<Class>.from_pretrained(dir)``
load it natively (meta init, dtype, device_map).
"""
from __future__ import annotations

import importlib

import torch
from torch import nn

from .adapters import ADAPTERS, get_adapter
from .adapters.base import Adapter, Site
from .plan import PrunePlan, SitePlan


def unit_index(keep: list[int], per_unit: int, device=None) -> torch.Tensor:
    """Row/column indices of the kept units, each a contiguous block of ``per_unit``."""
    k = torch.as_tensor(keep, dtype=torch.long, device=device).reshape(-1, 1)
    return (k * per_unit + torch.arange(per_unit, device=device)).reshape(-1)


def slice_linear(lin: nn.Linear, idx: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping ``idx`` along ``dim`` (0 = output rows, 1 = input columns); same device/dtype."""
    w = lin.weight.index_select(dim, idx.to(lin.weight.device))
    new = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None, device="meta")
    new.weight = nn.Parameter(w.detach().clone(), requires_grad=lin.weight.requires_grad)
    if lin.bias is not None:
        b = lin.bias.index_select(0, idx.to(lin.bias.device)) if dim == 0 else lin.bias
        new.bias = nn.Parameter(b.detach().clone(), requires_grad=lin.bias.requires_grad)
    return new


def _ensure_bias(lin: nn.Linear) -> None:
    if lin.bias is None:
        lin.bias = nn.Parameter(torch.zeros(lin.out_features, dtype=lin.weight.dtype,
                                            device=lin.weight.device), requires_grad=False)


def apply_site(site: Site, sp: SitePlan) -> None:
    """Slice one site in place: producers' rows, the consumer's columns, then the folded update."""
    for parent, attr, rows in site.producers:
        setattr(parent, attr, slice_linear(getattr(parent, attr), unit_index(sp.keep, rows), 0))
    parent, attr = site.consumer
    new = slice_linear(getattr(parent, attr), unit_index(sp.keep, site.cols_per_unit), 1)
    _update_consumer(new, sp.weight, sp.bias_delta)
    setattr(parent, attr, new)


def _update_consumer(lin: nn.Linear, weight, bias_delta) -> None:
    with torch.no_grad():
        if weight is not None:
            lin.weight.copy_(weight.to(lin.weight))
        if bias_delta is not None:
            _ensure_bias(lin)
            lin.bias.add_(bias_delta.to(lin.bias))


def mask_site(site: Site, sp: SitePlan) -> None:
    """Shape-preserving equivalent of apply_site: zero the dropped consumer columns, write the update."""
    lin = site.consumer_linear
    cols = unit_index(sp.keep, site.cols_per_unit, device=lin.weight.device)
    with torch.no_grad():
        full = torch.zeros_like(lin.weight)
        full[:, cols] = lin.weight[:, cols] if sp.weight is None else sp.weight.to(lin.weight)
        lin.weight.copy_(full)
    _update_consumer(lin, None, sp.bias_delta)


def apply_plan(model: nn.Module, plan: PrunePlan, mode: str = "slice", adapter: Adapter | None = None):
    """Apply ``plan`` to ``model`` in place (mode 'slice' or 'mask'); returns the model."""
    adapter = adapter or get_adapter(model)
    layers = adapter.layers(model)
    assert len(layers) == len(plan.layers), "plan and model have different layer counts"
    for layer, lp in zip(layers, plan.layers):
        sites = adapter.sites(layer)
        for kind, sp in lp.items():
            (apply_site if mode == "slice" else mask_site)(sites[kind], sp)
        adapter.after_resize(layer)
    if mode == "slice":
        finalize(model, adapter)
    return model


# ---------------------------------------------------------------- save / load with per-layer widths
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
                _ensure_bias(adapter.sites(layer)[kind].consumer_linear)
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
