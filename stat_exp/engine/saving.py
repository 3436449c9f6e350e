"""Save and reload pruned models despite per-layer widths.

``finalize(model)`` records every sliced Linear's shape and the attributes its family's forward reads in the
config (``stat_linears``, ``stat_attrs``, ``stat_silenced``: see ``remote``), switches ``model_type`` to
``stat_<type>`` and the model's class to a subclass whose ``__init__`` rebuilds those shapes. Such a model's
``save_pretrained`` also writes ``modeling_stat.py`` and an ``auto_map``, so two loads work:

- anywhere: ``AutoModelFor….from_pretrained(dir, trust_remote_code=True)`` (no stat-exp needed);
- natively: after ``stat_exp.register()`` (``register_auto_classes``), ``AutoModelFor….from_pretrained(dir)``.

Without either, transformers refuses with a message that asks for ``trust_remote_code=True``.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from torch import nn

from ..adapters import ADAPTERS, get_adapter
from .. import files
from ..adapters.base import Adapter
from . import remote
from .card import model_card
from .remote import PrunedMixin

log = logging.getLogger(__name__)

_PRUNED_CLASSES: dict[str, type] = {}
CODE_FILE = "modeling_stat.py"


def family_classes(model: nn.Module) -> dict[str, type]:
    """{Auto class name: transformers class} of the pruned model's base family (its base config's type)."""
    mt = type(model.config).__mro__[1].model_type
    return {auto: c for auto in get_adapter(model).auto_classes if (c := _model_class(auto, mt)) is not None}


def remote_code(model: nn.Module) -> tuple[str, dict[str, str]]:
    """The ``modeling_stat.py`` source for a pruned model and the config's ``auto_map`` that points at it."""
    base_cfg = type(model.config).__mro__[1]
    classes = family_classes(model)
    auto_map = {"AutoConfig": f"{CODE_FILE[:-3]}.Stat{base_cfg.__name__}"}
    auto_map |= {auto: f"{CODE_FILE[:-3]}.Stat{c.__name__}" for auto, c in classes.items()}
    lines = [Path(remote.__file__).read_text(), "", f"from {base_cfg.__module__} import {base_cfg.__name__}"]
    lines += [f"from {c.__module__} import {c.__name__}" for c in classes.values()]
    lines += ["", "", f"class Stat{base_cfg.__name__}({base_cfg.__name__}):",
              f'    model_type = "{type(model.config).model_type}"', ""]
    for c in classes.values():
        lines += ["", f"class Stat{c.__name__}(PrunedMixin, {c.__name__}):",
                  f"    config_class = Stat{base_cfg.__name__}", ""]
    return "\n".join(lines) + "\n", auto_map


def auto_class(model: nn.Module) -> str:
    """The transformers Auto class that loads ``model``'s class (e.g. ``AutoModelForCausalLM``)."""
    base = type(model).__mro__[2]  # StatX → PrunedMixin → X
    return next((auto for auto, c in family_classes(model).items() if c is base), "AutoModel")


def _save_with_code(self, save_directory, *args, **kwargs):
    """``save_pretrained`` that also writes modeling_stat.py and the config's ``auto_map``, so the save loads
    with ``trust_remote_code=True`` where stat-exp is not installed, and the model card (``card``)."""
    source, self.config.auto_map = remote_code(self)
    type(self).__mro__[2].save_pretrained(self, save_directory, *args, **kwargs)
    (Path(save_directory) / CODE_FILE).write_text(source)
    qmap = quant_map(self)
    if qmap:  # reload: optimum.quanto.QuantizedModelForCausalLM.from_pretrained(dir) after stat_exp.register()
        (Path(save_directory) / "quanto_qmap.json").write_text(json.dumps(qmap, indent=1))
    if getattr(self, "stat_card", None):  # a model card, when the pruner said how it was made
        text = model_card(self.stat_card, getattr(self, "stat_scores", {}), auto_class(self))
        (Path(save_directory) / "README.md").write_text(text)


def _pruned_class(base: type) -> type:
    name = "Stat" + base.__name__
    if name not in _PRUNED_CLASSES:
        body = {"__module__": __name__, "save_pretrained": _save_with_code}
        _PRUNED_CLASSES[name] = type(name, (PrunedMixin, base), body)
    return _PRUNED_CLASSES[name]


def finalize(model: nn.Module, adapter: Adapter | None = None) -> nn.Module:
    """Record the current per-layer widths in the config and make the model a registered Stat class."""
    adapter = adapter or get_adapter(model)
    names = {id(m): n for n, m in model.named_modules()}
    linears, attrs, silenced = {}, {}, {}
    for layer in adapter.layers(model):
        prefix = names[id(layer)]
        for site in adapter.sites(layer).values():
            for parent, attr in [(p, a) for p, a, _ in site.producers] + [site.consumer] + site.shared:
                lin = getattr(parent, attr)
                entry = [lin.in_features, lin.out_features, lin.bias is not None]
                gathered = [{"kv": lin.kv, "head_dim": lin.head_dim}] if isinstance(lin, remote.GatheredLinear) else []
                linears[f"{names[id(parent)]}.{attr}"] = entry + gathered
        for sub, values in adapter.resized_attrs(layer).items():
            attrs[f"{prefix}.{sub}" if sub else prefix] = values
        for sub, mod in layer.named_modules(prefix=prefix):
            if hasattr(mod, "stat_output_linear"):
                silenced[sub] = mod.stat_output_linear
    cfg = model.config
    if not type(cfg).model_type.startswith("stat_"):
        cfg.__class__ = _config_class(type(cfg))
    cfg.__dict__.pop("model_type", None)  # a config read from a directory holds its own copy of the old type
    cfg.stat_linears, cfg.stat_attrs, cfg.stat_silenced = linears, attrs, silenced
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


def _model_class(auto_name: str, model_type: str):
    """transformers' class for ``model_type`` under Auto class ``auto_name`` (its own mapping: ``gemma3_text``
    → ``Gemma3ForCausalLM``), or None."""
    import transformers

    mapping = getattr(transformers, auto_name)._model_mapping._model_mapping
    name = mapping.get(model_type)
    return getattr(transformers, name, None) if isinstance(name, str) else None


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
            for auto_name in adapter.auto_classes:
                base = _model_class(auto_name, mt)
                if base is None:
                    continue
                cls = _pruned_class(base)
                cls.config_class = cfg_cls
                try:
                    getattr(transformers, auto_name).register(cfg_cls, cls)
                except ValueError:
                    pass


def saved(d: Path) -> bool:
    """Whether ``d`` holds a complete save (``save_pruned`` renames it into place only then)."""
    return (Path(d) / "plan.json").exists() and (Path(d) / "config.json").exists()


def quant_map(model: nn.Module) -> dict:
    """optimum-quanto's map of quantized modules (empty for a model without any)."""
    if not any(type(m).__module__.startswith("optimum.quanto") for m in model.modules()):
        return {}
    from optimum.quanto import quantization_map

    return quantization_map(model)


def save_pruned(d: Path, model: nn.Module, tok, plan) -> None:
    """``save_pretrained`` of a pruned model (with its model card) and its tokenizer into ``d``, with its plan
    as plan.json: written into a hidden temporary directory beside ``d`` (``.<name>.<host>-<pid>.tmp``) and
    renamed into place when complete, so a kill mid-save leaves no directory that looks like a model."""
    d = Path(d)
    tmp = files.temp_path(d, hidden=True)
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "plan.json").write_text(json.dumps(plan.to_json()))
        files.replace_dir(tmp, d)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("saved %s (reload: AutoModel….from_pretrained(dir, trust_remote_code=True), "
             "or natively after `import stat_exp; stat_exp.register()`)", d)
