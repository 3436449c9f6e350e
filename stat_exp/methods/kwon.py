"""Kwon et al. 2022, *A Fast Post-Training Pruning Framework for Transformers*, written from the description in
their paper (not from their code), on this project's sites, cost model and surgery:

1. Fisher importance: a multiplicative mask (all ones) on every unit's consumer input (a head's context
   vector, an FFN neuron's activation); per labelled mini-batch the task loss's gradient g_b w.r.t. the masks;
   importance = Σ_b g_b² (diagonal empirical Fisher).
2. Mask search under the FLOPs budget: for every total head count h, keep the h most important heads and
   spend what is left on the globally most important neurons; keep the h with the largest total importance.
3. Mask rearrangement: per site, greedy swaps of a kept and a pruned unit that lower 1_Pᵀ F 1_P, with
   F = Σ_b g_b g_bᵀ the within-site Fisher block and P the pruned set.
4. Mask tuning: layer by layer, damped least squares for real-valued per-unit scales (and a scale on the
   consumer bias) so the pruned sublayer output matches a teacher, the model masked at the intermediate
   budget √μ. Solved from Gram statistics (no N·d × k matrix); tuning stops for the remaining layers when a
   solve fails or a scale exceeds 10 in magnitude.
The result is a plan (kept units + scales folded into the consumer), sliced like every other method.
"""
from __future__ import annotations

import logging
import math
import time

import torch

from ..core.linalg import ridge_solve
from ..core.plan import PrunePlan, SitePlan
from ..core.units import unit_columns, unit_sum
from ..engine.capture import Captured, _to, hooks, walk
from ..errors import UserError
from .base import Method

log = logging.getLogger(__name__)


def _mask_hook(vec_ref: dict, key, cols: int):
    """Pre-hook on a consumer: multiply its input columns by the unit mask vec_ref[key] (n_units,)."""
    def hook(_mod, args):
        v = vec_ref[key]
        if v is None:
            return None
        z = args[0]
        return (z * v.to(z).repeat_interleave(cols),) + tuple(args[1:])
    return hook


def search(importance: list[torch.Tensor], kinds: list[str], costs: list[float], budget: float) -> list[list[int]]:
    """Step 2: kept units per site. Heads and neurons are each ranked globally by importance."""
    def flat(kind):
        items = [(float(s), i, u) for i, (k, imp) in enumerate(zip(kinds, importance)) if k == kind
                 for u, s in enumerate(imp.tolist())]
        items.sort(key=lambda t: -t[0])
        imp = torch.tensor([0.0] + [t[0] for t in items], dtype=torch.float64).cumsum(0)
        cost = torch.tensor([0.0] + [costs[t[1]] for t in items], dtype=torch.float64).cumsum(0)
        return items, imp, cost

    heads, h_imp, h_cost = flat("attn")
    neurons, n_imp, n_cost = flat("ffn")
    best = None
    for h in range(len(heads) + 1):
        left = budget - float(h_cost[h])
        if left < 0:
            break
        k = int(torch.searchsorted(n_cost, torch.tensor(left, dtype=torch.float64), right=True)) - 1
        total = float(h_imp[h] + n_imp[k])
        if best is None or total > best[0]:
            best = (total, h, k)
    if best is None:
        best = (0.0, 0, 0)
    _, h, k = best
    keeps: list[list[int]] = [[] for _ in kinds]
    for _, i, u in heads[:h] + neurons[:k]:
        keeps[i].append(u)
    return [sorted(k) for k in keeps]


def rearrange(keep: list[int], fisher: torch.Tensor, max_swaps: int = 1000) -> list[int]:
    """Step 3: swap (kept i -> pruned, pruned j -> kept) while it lowers f(P) = 1_Pᵀ F 1_P."""
    n = fisher.shape[0]
    if not keep or len(keep) == n:
        return sorted(keep)
    F = fisher.double()
    kept = torch.zeros(n, dtype=torch.bool)
    kept[keep] = True
    d = F.diagonal()
    for _ in range(max_swaps):
        p = (~kept).double()
        Fp = F @ p
        ki, pj = kept.nonzero().squeeze(1), (~kept).nonzero().squeeze(1)
        # Δ(i, j) = 2(Fp_i − Fp_j) + F_ii + F_jj − 2 F_ij
        delta = 2 * (Fp[ki, None] - Fp[None, pj]) + d[ki, None] + d[None, pj] - 2 * F[ki][:, pj]
        v, flat = delta.reshape(-1).min(0)
        if v >= -1e-12 * max(1.0, float(d.max())):
            break
        i, j = ki[flat // len(pj)], pj[flat % len(pj)]
        kept[i], kept[j] = False, True
    return kept.nonzero().squeeze(1).tolist()


def tuning_system(G, M, s1, t_sum, count, W, b, keep, cols_per_unit):
    """Normal equations (A, r) of min_s Σ_t ‖Σ_u s_u W_u z_tu + s_b b − T_t‖² from statistics only:
    G = Σ z zᵀ, M = Σ T zᵀ, s1 = Σ z, t_sum = Σ T over ``count`` tokens; W the consumer weight, b its bias
    (None: no bias column). A_uv = Σ_{c∈u,c'∈v} G_cc' (WᵀW)_cc', r_u = Σ_{c∈u} W_cᵀ M_c."""
    cpu = cols_per_unit
    cols = unit_columns(keep, cpu)
    k = len(keep)
    Wk, Gk = W[:, cols], G[cols][:, cols]
    A = unit_sum(Gk * (Wk.T @ Wk), cpu)
    r = unit_sum((Wk * M[:, cols]).sum(0), cpu)
    if b is not None:
        ab = unit_sum((Wk.T @ b) * s1[cols], cpu)
        A = torch.cat([torch.cat([A, ab[:, None]], 1), torch.cat([ab, (count * b @ b).reshape(1)])[None]], 0)
        r = torch.cat([r, (b @ t_sum).reshape(1)])
    return A, r


class Kwon(Method):
    """Kwon et al. 2022 (Fisher masks, search, rearrangement, LS mask tuning); needs labelled batches."""

    name, needs_stats, needs_labels = "kwon", False, True

    def __init__(self, rearrange: bool = True, tune: bool = True, damping: float = 1e-3, max_scale: float = 10.0,
                 **options):
        super().__init__(**options)
        self.do_rearrange, self.do_tune = rearrange, tune
        self.damping, self.max_scale = damping, max_scale
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------ step 1
    def calibrate(self, ctx, cap: Captured) -> None:
        self.ctx, self.cap = ctx, cap
        ctx.refuse_groups("method kwon", "searches masks under additive unit costs")
        if not ctx.labelled:
            raise UserError("method kwon needs labelled task batches (a GLUE, SQuAD or language-model task)")
        t = time.perf_counter()
        model = ctx.model
        masks = [torch.ones(n, device=ctx.device, requires_grad=True) for n in ctx.n_units]
        ref = {i: m for i, m in enumerate(masks)}
        req = {n: p.requires_grad for n, p in model.named_parameters()}
        grads = []
        try:
            with hooks() as hs:
                for i in range(len(masks)):
                    site = ctx.site(i)
                    hs.append(site.consumer_linear.register_forward_pre_hook(_mask_hook(ref, i, site.cols_per_unit)))
                for p in model.parameters():
                    p.requires_grad_(False)
                model.to(ctx.device)
                for b in ctx.labelled:
                    loss = model(**_to(b, ctx.device)).loss
                    grads.append([g.detach().double().cpu() for g in torch.autograd.grad(loss, masks)])
        finally:
            for n, p in model.named_parameters():
                p.requires_grad_(req[n])
            model.to("cpu")
        self.G = [torch.stack([g[i] for g in grads]) for i in range(len(masks))]  # per site (batches, n)
        self.importance = [g.square().sum(0) for g in self.G]
        self.timings["fisher_s"] = time.perf_counter() - t

    # ------------------------------------------------------------ steps 2-3
    def masks(self, budget: float) -> list[list[int]]:
        ctx = self.ctx
        kinds = [k for _, k in ctx.site_keys]
        keeps = search(self.importance, kinds, ctx.costs, ctx.budget(budget))
        if self.do_rearrange:
            keeps = [rearrange(k, g.T @ g) for k, g in zip(keeps, self.G)]
        return keeps

    def plan(self, budget: float) -> PrunePlan:
        t = time.perf_counter()
        keeps = self.masks(budget)
        self.timings["search_s"] = time.perf_counter() - t
        scales, bias_scales = [None] * len(keeps), [None] * len(keeps)
        if self.do_tune and budget < 1:
            t = time.perf_counter()
            scales, bias_scales = self._tune(keeps, self.masks(math.sqrt(budget)))
            self.timings["tune_s"] = time.perf_counter() - t
        plan = self.new_plan(keeps, budget=budget)
        for i, (li, kind) in enumerate(self.ctx.site_keys):
            sp: SitePlan = plan.layers[li][kind]
            if scales[i] is None:
                continue
            site = self.ctx.site(i)
            W = site.consumer_linear.weight.detach()
            cpu = site.cols_per_unit
            sp.weight = W[:, unit_columns(sp.keep, cpu)].double() * scales[i].repeat_interleave(site.cols_per_unit)
            b = site.consumer_linear.bias
            if bias_scales[i] is not None and b is not None:
                sp.bias_delta = (bias_scales[i] - 1) * b.detach().double()
        return plan

    # ------------------------------------------------------------ step 4
    def _tune(self, keeps, teacher_keeps):
        """Per layer (one walk, streams 'teacher' and 'student'): the teacher's consumer outputs are the
        targets; per site (attention first, then the FFN sees the tuned attention) solve the scales."""
        ctx = self.ctx
        index = {key: i for i, key in enumerate(ctx.site_keys)}

        def vec(keep, n, values=None):
            v = torch.zeros(n, dtype=torch.float32)
            v[keep] = 1 if values is None else values.float()
            return v

        scales, bias_scales = [None] * len(keeps), [None] * len(keeps)
        state = {"active": True}

        def visit(li, layer, _stats, run):
            sites = ctx.adapter.sites(layer)
            ids = {kind: index[(li, kind)] for kind in sites}
            cur = {k: vec(teacher_keeps[ids[k]], ctx.n_units[ids[k]]) for k in sites}
            targets = {k: [] for k in sites}
            with hooks() as hs:
                hs += [s.consumer_linear.register_forward_pre_hook(_mask_hook(cur, k, s.cols_per_unit))
                       for k, s in sites.items()]
                with hooks() as taps:  # teacher pass: consumer outputs are the targets
                    taps += [s.consumer_linear.register_forward_hook(
                        lambda _m, _a, out, k=k: targets[k].append(run.tokens(out).double().cpu()))
                        for k, s in sites.items()]
                    run.all("teacher")
                cur.update({k: vec(keeps[ids[k]], ctx.n_units[ids[k]]) for k in sites})
                for kind in sites:
                    if not state["active"]:
                        break
                    i = ids[kind]
                    sol = self._solve(sites[kind], keeps[i], targets[kind], run)
                    if sol is None:
                        log.info("kwon: mask tuning stopped at layer %d (%s): failed or |scale| > %g", li, kind,
                                 self.max_scale)
                        state["active"] = False
                        break
                    scales[i], bias_scales[i] = sol
                    cur[kind] = vec(keeps[i], ctx.n_units[i], sol[0])
                run.all("student")  # the student's outputs with the tuned scales feed the next layer

        walk(ctx.model, ctx.adapter, {"teacher": self.cap, "student": self.cap}, ctx.device, visit=visit,
             desc="kwon: mask tuning")
        return scales, bias_scales

    def _solve(self, site, keep, targets, run):
        """Scales s (k,) and bias scale (or None) minimising Σ_t ‖Σ_u s_u W_u z_tu + s_b b − T_t‖², from
        statistics over the kept columns only ((k·cpu)², not n²) of the student's masked consumer input."""
        if not keep:
            return torch.zeros(0, dtype=torch.float64), None
        cols = unit_columns(keep, site.cols_per_unit)
        W = site.consumer_linear.weight.detach().double().cpu()[:, cols]
        b = site.consumer_linear.bias
        b = None if b is None else b.detach().double().cpu()
        n = W.shape[1]
        G, M = torch.zeros(n, n, dtype=torch.float64), torch.zeros(W.shape[0], n, dtype=torch.float64)
        s1, t_sum = torch.zeros(n, dtype=torch.float64), torch.zeros(W.shape[0], dtype=torch.float64)
        count = [0]

        def grab(_mod, args):
            z = run.tokens(args[0])[:, cols].double().cpu()
            T = targets[run.current[1]]
            G.add_(z.T @ z)
            M.add_(T.T @ z)
            s1.add_(z.sum(0))
            t_sum.add_(T.sum(0))
            count[0] += z.shape[0]

        # registered after the mask hook, so z is the student's masked input
        with hooks() as hs:
            hs.append(site.consumer_linear.register_forward_pre_hook(grab))
            run.all("student")
        A, r = tuning_system(G, M, s1, t_sum, count[0], W, b, list(range(len(keep))), site.cols_per_unit)
        x = ridge_solve(A, r, self.damping)
        if not torch.isfinite(x).all() or float(x.abs().max()) > self.max_scale:
            return None
        k = len(keep)
        return (x[:k], x[k]) if b is not None else (x, None)
