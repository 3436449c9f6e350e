"""The Method protocol and the context every method gets (no Hydra config inside)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..adapters.base import Adapter
from ..capture import Captured, SiteStats, walk
from ..flops import site_flops, unit_cost
from ..plan import PrunePlan
from ..surgery import apply_plan


@dataclass
class Context:
    """What a method may use: the dense model, its adapter, the cost model's sequence length."""

    model: nn.Module
    adapter: Adapter
    seqlen: int
    device: str = "cpu"
    seed: int = 0
    site_keys: list[tuple[int, str]] = field(default_factory=list)  # flattened (layer, kind)
    costs: list[int] = field(default_factory=list)                   # FLOPs per unit, per site
    n_units: list[int] = field(default_factory=list)
    dense_flops: int = 0                                             # prunable FLOPs per token
    cache_dir: str | None = None                                     # where methods may cache statistics
    cache_key: dict | None = None                                    # what the statistics depend on
    labelled: list[dict] | None = None                               # full-model batches with labels (kwon)

    def __post_init__(self):
        for li, layer in enumerate(self.adapter.layers(self.model)):
            for kind, site in self.adapter.sites(layer).items():
                self.site_keys.append((li, kind))
                self.costs.append(unit_cost(site, self.seqlen))
                self.n_units.append(site.n_units)
                self.dense_flops += site_flops(site, self.seqlen)

    def site(self, i: int):
        li, kind = self.site_keys[i]
        return self.adapter.sites(self.adapter.layers(self.model)[li])[kind]


class Method:
    """calibrate once on the dense model; then ``prune(model_copy, budget)`` per budget."""

    name = "base"
    needs_stats = True
    gram = False

    def __init__(self, **options):
        self.options = options

    def calibrate(self, ctx: Context, cap: Captured) -> None:
        self.ctx = ctx
        self.stats = (walk(ctx.model, ctx.adapter, cap, ctx.device, lambda kind: SiteStats(gram=self.gram),
                           desc=f"{self.name}: calibrate") if self.needs_stats else None)

    def plan(self, budget: float) -> PrunePlan:  # pragma: no cover - per method
        raise NotImplementedError

    def prune(self, model: nn.Module, budget: float) -> PrunePlan:
        """Prune ``model`` (a copy of the dense model) in place to ``budget``; return the plan."""
        plan = self.plan(budget)
        apply_plan(model, plan, adapter=self.ctx.adapter)
        return plan

    def stat(self, i: int) -> SiteStats:
        li, kind = self.ctx.site_keys[i]
        return self.stats[li][kind]

    def new_plan(self, keeps: list[list[int]], **meta) -> PrunePlan:
        from ..plan import SitePlan

        n_layers = 1 + max(li for li, _ in self.ctx.site_keys)
        layers: list[dict] = [{} for _ in range(n_layers)]
        for (li, kind), keep in zip(self.ctx.site_keys, keeps):
            layers[li][kind] = SitePlan(keep=keep)
        return PrunePlan(layers, meta={"method": self.name, **meta})


def per_unit(values: torch.Tensor, cols_per_unit: int) -> torch.Tensor:
    """Sum a per-column vector (n_units·cols,) into per-unit totals (n_units,)."""
    return values.reshape(-1, cols_per_unit).sum(1)
