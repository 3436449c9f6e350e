"""Rebuild a pruned model at its recorded widths: the modeling code saved beside its weights.

This module imports torch only: ``save_pruned`` copies its source, followed by a few generated class
lines, into the saved directory as ``modeling_stat.py``, so ``AutoModelFor….from_pretrained(dir,
trust_remote_code=True)`` loads a pruned model on a host without stat-exp. Inside stat-exp the same
functions serve the natively registered classes (``saving.register_auto_classes``): one resize rule.

=====================  =====================================================================
config key             meaning (written by ``saving.finalize``)
=====================  =====================================================================
``stat_linears``       ``{dotted path: [in_features, out_features, has_bias]}`` per sliced Linear
``stat_attrs``         ``{dotted path: {attribute: value}}`` the family's forward reads (head counts);
                       ``config.<key>`` sets it on the module's own copy of the config (a forward that
                       reads the shared config, as Phi-3's attention reads ``num_attention_heads``)
``stat_silenced``      ``{dotted path of an attention block: name of its output Linear}`` (no heads)
=====================  =====================================================================
"""
from __future__ import annotations

import copy

import torch
from torch import nn

_SILENCED: dict[type, type] = {}


def _silent_forward(self, hidden_states, *args, **kwargs):
    """An attention block with every head pruned: its output is its output Linear's bias."""
    out = getattr(self, self.stat_output_linear)
    return out(hidden_states.new_zeros(*hidden_states.shape[:-1], 0)), None


def silence(block: nn.Module, output_linear: str) -> None:
    """Make ``block`` (an attention module left with zero heads) return only its output bias."""
    base = type(block)
    if base not in _SILENCED:
        _SILENCED[base] = type("Silenced" + base.__name__, (base,), {"forward": _silent_forward})
    block.__class__ = _SILENCED[base]
    block.stat_output_linear = output_linear


def set_attr(module: nn.Module, key: str, value) -> None:
    """``module.<key> = value``; for ``config.<name>``, on a copy of the config that ``module`` alone holds."""
    if key.startswith("config."):
        if not getattr(module, "stat_own_config", False):
            module.config, module.stat_own_config = copy.copy(module.config), True
        setattr(module.config, key[len("config."):], value)
    else:
        setattr(module, key, value)


def resize_from_config(model: nn.Module) -> None:
    """Replace every Linear and attribute recorded in ``model.config`` (weights are loaded afterwards)."""
    cfg = model.config
    for path, (fin, fout, bias) in (getattr(cfg, "stat_linears", None) or {}).items():
        parent, name = path.rsplit(".", 1)
        parent = model.get_submodule(parent)
        old = getattr(parent, name).weight
        setattr(parent, name, nn.Linear(fin, fout, bias=bias, device=old.device, dtype=old.dtype))
    for path, attrs in (getattr(cfg, "stat_attrs", None) or {}).items():
        for key, value in attrs.items():
            set_attr(model.get_submodule(path), key, value)
    for path, output_linear in (getattr(cfg, "stat_silenced", None) or {}).items():
        silence(model.get_submodule(path), output_linear)


class PrunedMixin:
    """First base of a pruned model class: build the family's model, then resize it from its config."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        with torch.no_grad():
            resize_from_config(self)
