"""Analytic cost model, read from the actual Linear shapes of each layer (so it is family-agnostic
and exact for non-uniform pruned layers).

Per token, a Linear ``in → out`` costs ``2·in·out`` FLOPs (biases and element-wise ops are not
counted, as in ``torch.utils.flop_counter``). Attention adds, per token and query row,
``2·s`` for QKᵀ and ``2·s`` for AV at sequence length s: ``4·s·(n_q·d_h)`` (Kwon et al. eq. for MACs
``4·s·d·d_h + 2·s²·d_h`` per head and sequence, in FLOPs per token). "Prunable" FLOPs are those of
the layers; the budget μ is the kept fraction of them (STAT.md §4).

``CostModel`` is the one place a budget fraction becomes an absolute cost and an achieved cost becomes a
ratio. ``kind='params'`` prices a unit at sequence length 0, i.e. 2 × its Linear weights, so a params
budget is the kept fraction of the layers' Linear parameters; the row reports the ratio of that same
quantity (``achieved``), next to FLOPs at the task's length and the whole model's parameters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from .units import rows_per_unit

if TYPE_CHECKING:  # sites and adapters are duck-typed here: core imports no model code
    from ..adapters.base import Adapter, Site

KINDS = ("flops", "params")


def _lin(lin: nn.Linear) -> int:
    return 2 * lin.in_features * lin.out_features


def site_flops(site: Site, seqlen: int) -> int:
    """FLOPs per token of one site as it is now (shared K/V once per computed KV head: their weight rows)."""
    f = sum(_lin(lin) for lin in site.producer_linears()) + _lin(site.consumer_linear)
    f += sum(_lin(getattr(*s)) for s in site.shared)
    if site.kind == "attn":
        f += 4 * seqlen * site.score_rows_per_unit * site.n_units
    return f


def unit_cost(site: Site, seqlen: int) -> int:
    """FLOPs per token that removing one unit of this site saves."""
    c = sum(2 * p.in_features * rows_per_unit(r) for p, (_, _, r) in zip(site.producer_linears(), site.producers))
    c += 2 * site.cols_per_unit * site.consumer_linear.out_features
    if site.kind == "attn":
        c += 4 * seqlen * site.score_rows_per_unit
    return c


def group_cost(site: Site) -> int:
    """FLOPs per token that removing a site's last unit of a group saves beyond ``unit_cost`` (the shared K/V
    rows of one KV head; 0 without shared projections)."""
    return sum(2 * lin.in_features * lin.head_dim for lin in (getattr(*s) for s in site.shared))


def layer_flops(adapter: Adapter, layer: nn.Module, seqlen: int) -> int:
    """FLOPs per token of one layer: its sites and the parts the family cannot prune (``fixed_flops``)."""
    return sum(site_flops(s, seqlen) for s in adapter.sites(layer).values()) + adapter.fixed_flops(layer, seqlen)


def model_flops(adapter: Adapter, model: nn.Module, seqlen: int) -> dict[str, int]:
    """{'prunable': Σ layers, 'total': + every Linear outside the layers (LM head, pooler), per token}."""
    layers = adapter.layers(model)
    prunable = sum(layer_flops(adapter, layer, seqlen) for layer in layers)
    inside = {id(m) for m in layers.modules()}
    other = sum(_lin(m) for m in model.modules() if isinstance(m, nn.Linear) and id(m) not in inside)
    return {"prunable": prunable, "total": prunable + other}


def count_params(model: nn.Module) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


@dataclass(frozen=True)
class CostModel:
    """Budget ↔ cost. ``kind``: 'flops' (per token at ``seqlen``) or 'params' (layer Linear weights)."""

    kind: str
    seqlen: int

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"cost kind {self.kind!r}; choose one of {', '.join(KINDS)}")

    @property
    def length(self) -> int:
        """The sequence length units are priced at (0 for parameters: no attention-score term)."""
        return 0 if self.kind == "params" else self.seqlen

    def unit(self, site: Site) -> int:
        """What removing one unit of ``site`` saves."""
        return unit_cost(site, self.length)

    def group(self, site: Site) -> int:
        """What removing the last unit of a group of ``site`` saves on top of ``unit`` (its shared K/V)."""
        return group_cost(site)

    def total(self, adapter: Adapter, model: nn.Module) -> int:
        """The constrained quantity of the whole prunable part (all layers)."""
        return sum(layer_flops(adapter, layer, self.length) for layer in adapter.layers(model))

    def ratio(self, adapter: Adapter, model: nn.Module, dense_total: int) -> float:
        """Achieved fraction of the constrained quantity, to compare with the budget."""
        return self.total(adapter, model) / dense_total

    @staticmethod
    def within(achieved: float, budget: float) -> bool:
        return achieved <= budget * (1 + 1e-9) + 1e-12
