"""Cheap baselines (see the README's method list): random, magnitude, Wanda-sp, FLAP."""
from __future__ import annotations

import torch

from ..core import allocation
from ..core.plan import PrunePlan
from ..core.units import unit_columns, unit_row_sum, unit_sum
from .base import Method


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
    """Units ranked by a per-unit score; uniform sizes unless ``global_threshold``."""

    global_threshold = False

    def scores(self) -> list[torch.Tensor]:  # pragma: no cover - per method
        raise NotImplementedError

    def plan(self, budget: float) -> PrunePlan:
        ctx, scores = self.ctx, self.scores()
        if self.global_threshold:
            keeps = allocation.by_score(scores, ctx.costs, ctx.budget(budget), ctx.groups, ctx.group_costs)
        else:
            orders = [allocation.ranked(s) for s in scores]
            counts = allocation.uniform(ctx.curves(orders), ctx.budget(budget))
            keeps = [sorted(o[:k].tolist()) for o, k in zip(orders, counts)]
        return self.decorate(self.new_plan(keeps, budget=budget))

    def decorate(self, plan: PrunePlan) -> PrunePlan:
        return plan


class Magnitude(_Scored):
    """Score = L2 norm of the unit's weights (producer rows and consumer columns)."""

    name, needs_stats = "magnitude", False

    def scores(self):
        out = []
        for i in range(len(self.ctx.site_keys)):
            site = self.ctx.site(i)
            sq = unit_sum(site.consumer_linear.weight.detach().float().square().sum(0), site.cols_per_unit)
            for lin, (_, _, rows) in zip(site.producer_linears(), site.producers):
                sq = sq + unit_row_sum(lin.weight.detach().float().square().sum(1), rows)
            out.append(sq.sqrt())
        return out


class WandaSP(_Scored):
    """Structured Wanda: Σ over the unit's consumer columns of |W_ij| · ‖x_j‖ (uniform sizes)."""

    name = "wanda_sp"

    def scores(self):
        out = []
        for i in range(len(self.ctx.site_keys)):
            site, st = self.ctx.site(i), self.stat(i)
            col = site.consumer_linear.weight.detach().double().abs().sum(0) * st.s2.sqrt()
            out.append(unit_sum(col, site.cols_per_unit))
        return out


class FLAP(_Scored):
    """Fluctuation score var(z_j)·‖W[:, j]‖², standardised within each layer's site, one global
    threshold over all layers and both kinds, and bias compensation W[:, E]·mean(z_E)
    (An et al., AAAI 2024)."""

    name, global_threshold = "flap", True

    def scores(self):
        raw = []
        for i in range(len(self.ctx.site_keys)):
            site, st = self.ctx.site(i), self.stat(i)
            col = st.var * site.consumer_linear.weight.detach().double().square().sum(0)
            raw.append(unit_sum(col, site.cols_per_unit))
        # standardise within each site so scores compare across layers and kinds (FLAP's AL-AM)
        return [(r - r.mean()) / r.std().clamp_min(1e-30) if len(r) > 1 else r * 0 for r in raw]

    def decorate(self, plan: PrunePlan) -> PrunePlan:
        for i, (li, kind) in enumerate(self.ctx.site_keys):
            site, st, sp = self.ctx.site(i), self.stat(i), plan.layers[li][kind]
            dropped = sorted(set(range(site.n_units)) - set(sp.keep))
            if dropped:
                cols = unit_columns(dropped, site.cols_per_unit)
                w = site.consumer_linear.weight.detach().double()[:, cols]
                sp.bias_delta = (w @ st.mean[cols]).float()
        return plan
