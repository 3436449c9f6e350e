"""Cheap baselines as their authors released them (``docs/methods.md``): random, magnitude-sp, Wanda-sp, FLAP.

| method    | unit score (per site)                                      | sizes                                 |
|-----------|------------------------------------------------------------|---------------------------------------|
| random    | a seeded random order                                      | the same kept fraction in every site  |
| magnitude | Σ over the unit's consumer columns of ‖W[:, j]‖₂           | one ratio p: int(p·n) pruned per site |
| wanda_sp  | Σ over the unit's columns of mean_i |W_ij|·‖x_j‖ (sequential) | one ratio p: int(p·n) pruned per site |
| flap      | mean over the unit's columns of the per-layer standardised | one global threshold over all sites,  |
|           | WIFV var(x_j)·‖W[:, j]‖² (squared for attention)            | priced by the cost model; bias comp.  |

Under grouped-query attention a KV-group unit owns the columns of all its query heads, a query-head unit its
own; the released rule applies unchanged. p is the smallest ratio whose FLOPs fit the budget (bisection).
"""
from __future__ import annotations

import logging

import torch

from ..core import allocation
from ..core.plan import PrunePlan, SitePlan
from ..core.units import unit_columns, unit_sum
from ..engine.capture import SiteStats, walk
from ..engine.saving import finalize
from ..engine.surgery import apply_plan, apply_site, shared_copy
from .base import Method

log = logging.getLogger(__name__)


class Random(Method):
    """Uniform per-site sizes, units drawn at random (seeded)."""

    name, needs_stats = "random", False

    def plan(self, budget: float) -> PrunePlan:
        ctx = self.ctx
        g = torch.Generator().manual_seed(ctx.seed)
        orders = [torch.randperm(n, generator=g) for n in ctx.n_units]
        counts = allocation.uniform(ctx.curves(orders), ctx.budget(budget))
        keeps = [sorted(o[:k].tolist()) for o, k in zip(orders, counts)]
        return self.new_plan(keeps, budget=budget)


class _Scored(Method):
    """Units ranked by a per-unit score (``site_score``). Sizes: the released one-ratio rounding
    (``allocation.shared_ratio``), or one global threshold priced by the cost model (``global_threshold``)."""

    global_threshold = False

    def site_score(self, site, stats: SiteStats | None, kind: str) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def scores(self) -> list[torch.Tensor]:
        return [self.site_score(self.ctx.site(i), self.stats and self.stat(i), kind)
                for i, (_, kind) in enumerate(self.ctx.site_keys)]

    def plan(self, budget: float) -> PrunePlan:
        ctx, scores = self.ctx, self.scores()
        if self.global_threshold:
            keeps = allocation.by_score(scores, ctx.costs, ctx.budget(budget), ctx.groups, ctx.group_costs)
            return self.decorate(self.new_plan(keeps, budget=budget))
        orders = [allocation.ranked(s) for s in scores]
        self.ratio, counts = allocation.shared_ratio(ctx.curves(orders), ctx.budget(budget))
        keeps = [sorted(o[:k].tolist()) for o, k in zip(orders, counts)]
        return self.new_plan(keeps, budget=budget, prune_ratio=self.ratio)

    def decorate(self, plan: PrunePlan) -> PrunePlan:
        return plan

    def row_info(self) -> dict:
        return {} if self.global_threshold else {"prune_ratio": self.ratio}


class Magnitude(_Scored):
    """The FLAP repository's magnitude-sp: a unit's score is the sum of its consumer columns' L2 norms."""

    name, needs_stats = "magnitude", False

    def site_score(self, site, stats, kind):
        return unit_sum(site.consumer_linear.weight.detach().double().norm(dim=0), site.cols_per_unit)


class WandaSP(_Scored):
    """The FLAP repository's wanda-sp: per column the mean over rows of |W_ij|·‖x_j‖, a unit the sum over its
    columns; int(p·n) pruned per site with one p; ``sequential`` (released: true) takes each layer's ‖x_j‖
    from the model whose earlier layers are already pruned. No compensation."""

    name = "wanda_sp"

    def __init__(self, sequential: bool = True, **options):
        super().__init__(sequential=sequential, **options)
        self.sequential = sequential

    def calibrate(self, ctx, cap) -> None:
        super().calibrate(ctx, cap)
        self.cap = cap  # the sequential pass walks the calibration inputs again

    def site_score(self, site, stats, kind):
        W = site.consumer_linear.weight.detach().double()
        return unit_sum(W.abs().mean(0) * stats.s2.double().sqrt().to(W.device), site.cols_per_unit)

    def prune(self, model, budget: float) -> PrunePlan:
        """Sequential: p from the dense statistics (exact for KV-group units, whose costs do not depend on
        which units go); a pass over ``model``'s layers in order, each scored on the pruned path and cut to
        n − int(p·n). Where shared K/V make the cost depend on the pass's choices, p moves to its next step
        until the pass fits."""
        if not self.sequential:
            return super().prune(model, budget)
        ctx, limit = self.ctx, self.ctx.budget(budget)
        p = allocation.shared_ratio(ctx.curves([allocation.ranked(s) for s in self.scores()]), limit)[0]
        while True:
            keeps, cost = self._sequential_pass(shared_copy(model), p)
            if cost <= limit or p >= 1:
                break
            log.info("wanda_sp: sequential pass keeps %.4g > budget %.4g with shared K/V; ratio %.4f → next step",
                     cost, limit, p)
            p = allocation.next_ratio(p, ctx.n_units)
        self.ratio = p
        plan = self.new_plan(keeps, budget=budget, prune_ratio=p, sequential=True)
        apply_plan(model, plan, adapter=ctx.adapter)
        return plan

    def _sequential_pass(self, work, p: float) -> tuple[list[list[int]], float]:
        """Prune ``work`` layer by layer at ratio ``p``; the kept units per site and their cost."""
        ctx = self.ctx
        index = {key: i for i, key in enumerate(ctx.site_keys)}
        keeps: list = [None] * len(ctx.site_keys)
        cost = [0.0]

        def visit(li, layer, stats, run):
            sites = ctx.adapter.sites(layer)
            for kind, site in sites.items():
                i = index[(li, kind)]
                order = allocation.ranked(self.site_score(site, stats[kind], kind))
                k = allocation.ratio_counts(p, [ctx.n_units[i]])[0]
                keeps[i] = sorted(order[:k].tolist())
                cost[0] += float(ctx.curve(i, order)[k])
                apply_site(site, SitePlan(keep=keeps[i]))
            ctx.adapter.after_resize(layer)
            run.forget("main")

        walk(work, ctx.adapter, self.cap, ctx.device, lambda kind: SiteStats(), visit,
             desc=f"{self.name}: sequential")
        finalize(work, ctx.adapter)
        return keeps, cost[0]


class FLAP(_Scored):
    """FLAP (An et al., AAAI 2024), structure AL-AM, metric WIFV, as released: per input channel j of each
    consumer, var(x_j)·‖W[:, j]‖² (squared for attention), standardised within each layer and module over its
    channels; a unit's score is the mean of its channels'; one global threshold over all sites priced by the
    cost model (a site may lose every unit); bias compensation W[:, E]·mean(x_E) into the consumer's bias."""

    name, global_threshold = "flap", True

    def site_score(self, site, stats, kind):
        metric = stats.var.double() * site.consumer_linear.weight.detach().double().square().sum(0).to(stats.var.device)
        if kind == "attn":
            metric = metric.square()
        std = metric.std() if metric.numel() > 1 else metric.new_tensor(0.0)
        z = (metric - metric.mean()) / std if float(std) > 0 else torch.zeros_like(metric)
        return unit_sum(z, site.cols_per_unit) / site.cols_per_unit

    def decorate(self, plan: PrunePlan) -> PrunePlan:
        for i, (li, kind) in enumerate(self.ctx.site_keys):
            site, st, sp = self.ctx.site(i), self.stat(i), plan.layers[li][kind]
            dropped = sorted(set(range(site.n_units)) - set(sp.keep))
            if dropped:
                cols = unit_columns(dropped, site.cols_per_unit)
                w = site.consumer_linear.weight.detach().double()[:, cols]
                sp.bias_delta = (w @ st.mean[cols]).float()
        return plan
