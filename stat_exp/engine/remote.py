"""Rebuild a pruned model at its recorded widths: the modeling code saved beside its weights.

This module imports torch only: ``save_pruned`` copies its source, followed by a few generated class
lines, into the saved directory as ``modeling_stat.py``, so ``AutoModelFor….from_pretrained(dir,
trust_remote_code=True)`` loads a pruned model on a host without stat-exp. Inside stat-exp the same
functions serve the natively registered classes (``saving.register_auto_classes``): one resize rule.

=====================  =====================================================================
config key             meaning (written by ``saving.finalize``)
=====================  =====================================================================
``stat_linears``       ``{dotted path: [in_features, out_features, has_bias]}`` per sliced Linear; a
                       ``GatheredLinear`` adds ``{"kv": query→KV map, "head_dim": d}`` as a fourth entry
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


class GatheredLinear(nn.Linear):
    """The K or V projection of an attention block pruned per query head under grouped-query attention: it
    computes each kept KV head once (``weight``: n_kv·d × in) and hands every kept query head its group's head.

    | name      | shape     | meaning                                                        |
    |-----------|-----------|----------------------------------------------------------------|
    | ``kv``    | n_q       | ``kv[h]`` = the computed KV head that kept query head h reads  |
    | output    | … × n_q·d | heads in query-head order, so the block runs with group size 1 |
    """

    def __init__(self, in_features: int, kv: list[int], head_dim: int, bias: bool = False, device=None, dtype=None):
        n_kv = (max(kv) + 1) if kv else 0
        super().__init__(in_features, n_kv * head_dim, bias=bias, device=device, dtype=dtype)
        self.kv, self.head_dim, self._index = [int(j) for j in kv], head_dim, None

    def forward(self, x):
        y = super().forward(x).unflatten(-1, (-1, self.head_dim))
        if self._index is None or self._index.device != y.device:
            self._index = torch.tensor(self.kv, dtype=torch.long, device=y.device)
        return y.index_select(-2, self._index).flatten(-2)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, query_heads={len(self.kv)}"


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
    for path, (fin, fout, bias, *kv) in (getattr(cfg, "stat_linears", None) or {}).items():
        parent, name = path.rsplit(".", 1)
        parent = model.get_submodule(parent)
        old = getattr(parent, name).weight
        if kv:  # a GatheredLinear: [..., {"kv": query→KV map, "head_dim": d}]
            new = GatheredLinear(fin, kv[0]["kv"], kv[0]["head_dim"], bias, device=old.device, dtype=old.dtype)
        else:
            new = nn.Linear(fin, fout, bias=bias, device=old.device, dtype=old.dtype)
        setattr(parent, name, new)
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
