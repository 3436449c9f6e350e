"""Kwon et al. 2022, *A Fast Post-Training Pruning Framework for Transformers*, as released, written from the
description (``docs/methods.md``), on this project's sites, cost model and surgery:

1. Fisher importance: a multiplicative mask (all ones) on every unit's consumer input (a head's context
   vector, an FFN neuron's activation); per labelled mini-batch the task loss's gradient g_b w.r.t. the masks;
   importance = Σ_b g_b² (diagonal empirical Fisher). ``samples`` labelled examples (released: 2048, drawn with
   replacement when the task has fewer); the tuning runs on the same examples.
2. Mask search under the FLOPs budget: for every total head count h, keep the h most important heads and
   spend what is left on the globally most important neurons; keep the h with the largest total importance.
3. Mask rearrangement: per site, greedy swaps of a kept and a pruned unit that lower 1_Pᵀ F 1_P, with
   F = Σ_b g_b g_bᵀ the within-site Fisher block and P the pruned set.
4. Mask tuning, layer by layer: real-valued per-unit scales s so the student's sub-layer output matches the
   teacher's, the model masked at √μ (searched, not rearranged). Target B = (W z_T + b + x_T) − b − x_S: the
   teacher's sub-layer output with its residual input x_T, minus the bias (held fixed) and the student's own
   residual input x_S, so the scales also absorb the drift accumulated upstream. Heads get an extra all-ones
   column (coefficient discarded); layer 0's heads are not tuned; a sequence classifier's last FFN is fitted on
   the CLS position only; damped least squares towards s = 1 (LSMR's damp on s − 1, damp 1); tuning stops
   for the remaining layers when a solve fails or a scale leaves [−10, 10]. Solved from Gram statistics.
The result is a plan (kept units + scales folded into the consumer), sliced like every other method.

| name   | shape      | meaning                                                             |
|--------|------------|---------------------------------------------------------------------|
| z      | N × k·c    | the student's masked consumer input on the kept columns (c per unit) |
| W      | d × k·c    | the consumer's kept columns                                          |
| T      | N × d      | the target B per token                                               |
| A      | N·d × k(+1) | column u = vec(W_u z_u); heads: plus an all-ones column             |
"""
from __future__ import annotations

import logging
import math
import time

import torch

from ..core.linalg import ridge_solve
from ..core.plan import PrunePlan, SitePlan
from ..core.units import unit_columns, unit_sum
from ..engine.capture import Captured, _to, capture_inputs, hooks, walk
from ..errors import UserError
from ..progress import progress
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


def tuning_system(G, M, s1, t_sum, count, W, keep, cols_per_unit, ones: bool = False):
    """Normal equations (AᵀA, AᵀT) of min_x ‖A x − vec T‖² over the N·d rows (token, output), from statistics:
    G = Σ z zᵀ, M = Σ T zᵀ, s1 = Σ z, t_sum = Σ T over ``count`` tokens; A's column u = vec(W_u z_u), and with
    ``ones`` a last all-ones column. (AᵀA)_uv = Σ_{c∈u,c'∈v} G_cc' (WᵀW)_cc', (AᵀT)_u = Σ_{c∈u} W_cᵀ M_c."""
    cpu = cols_per_unit
    cols = unit_columns(keep, cpu)
    Wk, Gk = W[:, cols], G[cols][:, cols]
    A = unit_sum(Gk * (Wk.T @ Wk), cpu)
    r = unit_sum((Wk * M[:, cols]).sum(0), cpu)
    if ones:
        a1 = unit_sum(Wk.sum(0) * s1[cols], cpu)
        corner = torch.tensor([[float(count * W.shape[0])]], dtype=A.dtype)
        A = torch.cat([torch.cat([A, a1[:, None]], 1), torch.cat([a1[None], corner], 1)], 0)
        r = torch.cat([r, t_sum.sum().reshape(1)])
    return A, r


def damped_solve(A, r, k: int, damp: float) -> torch.Tensor:
    """x minimising ‖A x − T‖² + damp²‖x − x₀‖² from the normal equations (A = AᵀA, r = AᵀT): LSMR's damping
    applied to x − x₀, x₀ = 1 for the first k entries (the scales) and 0 for an extra column."""
    x0 = torch.zeros(len(r), dtype=torch.float64)
    x0[:k] = 1
    A, r = A.double(), r.double()
    scale = float(A.diagonal().mean().clamp_min(1e-300))
    return x0 + ridge_solve(A, r - A @ x0, damp ** 2 / scale)


class _Taps:
    """Per batch of a stream: each site's consumer input (kept columns), consumer output and residual input x,
    read through hooks (``Adapter.residual``: x is a module's input, or that input minus the consumer's output)."""

    def __init__(self, adapter, layer, sites: dict, run, cols: dict | None = None):
        self.adapter, self.layer, self.sites, self.run, self.cols = adapter, layer, sites, run, cols or {}
        self.rec: dict = {}

    def __enter__(self):
        self._hooks = hooks()
        hs = self._hooks.__enter__()
        rec, run = self.rec, self.run
        for k, s in self.sites.items():
            rec[k] = {}
            lin = s.consumer_linear
            if k in self.cols:
                hs.append(lin.register_forward_pre_hook(
                    lambda _m, a, k=k: rec[k].__setitem__("z", run.tokens(a[0])[:, self.cols[k]].double().cpu())))
            hs.append(lin.register_forward_hook(
                lambda _m, _a, out, k=k: rec[k].__setitem__("out", run.tokens(out).double().cpu())))
            where = self.adapter.residual(self.layer, k)
            if where is not None:
                hs.append(where[0].register_forward_pre_hook(
                    lambda _m, a, k=k: rec[k].__setitem__("res", run.tokens(a[0]).double().cpu())))
        return self

    def residual(self, kind: str) -> torch.Tensor | float:
        """x of the batch just run (0 where the family gives no residual)."""
        where, r = self.adapter.residual(self.layer, kind), self.rec[kind]
        if where is None:
            return 0.0
        return r["res"] if where[1] == "input" else r["res"] - r["out"]

    def __exit__(self, *exc):
        return self._hooks.__exit__(*exc)


def _first_tokens(lengths: list[int]) -> torch.Tensor:
    """Row of each sequence's first token among a batch's real tokens (rows come sequence by sequence)."""
    return torch.tensor([0] + lengths[:-1], dtype=torch.long).cumsum(0)


class Kwon(Method):
    """Kwon et al. 2022 as released (Fisher masks, search, rearrangement, LS mask tuning); needs labelled batches."""

    name, needs_stats, needs_labels = "kwon", False, True

    def __init__(self, rearrange: bool = True, tune: bool = True, damping: float = 1.0, max_scale: float = 10.0,
                 samples: int | None = 2048, **options):
        super().__init__(rearrange=rearrange, tune=tune, damping=damping, max_scale=max_scale, samples=samples,
                         **options)
        self.do_rearrange, self.do_tune = rearrange, tune
        self.damping, self.max_scale = damping, max_scale
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------ step 1
    def calibrate(self, ctx, cap: Captured) -> None:
        """Fisher on ``ctx.labelled``; the tuning's inputs are captured from the same examples (``cap``, the
        run's calibration inputs, is not used: the released method tunes on its own labelled sample)."""
        self.ctx = ctx
        ctx.refuse_groups("method kwon", "searches masks under additive unit costs")
        if not ctx.labelled:
            raise UserError("method kwon needs labelled task batches (a GLUE, SQuAD or language-model task)")
        t = time.perf_counter()
        model = ctx.model
        self.cap = capture_inputs(model, ctx.adapter, ctx.labelled, ctx.device)
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
                for b in progress(ctx.labelled, "kwon fisher", unit="batch"):
                    loss = model(**_to(b, ctx.device)).loss
                    grads.append([g.detach().double().cpu() for g in torch.autograd.grad(loss, masks)])
        finally:
            for n, p in model.named_parameters():
                p.requires_grad_(req[n])
            model.to("cpu")
        self.samples = sum(len(b["input_ids"]) for b in ctx.labelled)
        self.G = [torch.stack([g[i] for g in grads]) for i in range(len(masks))]  # per site (batches, n)
        self.importance = [g.square().sum(0) for g in self.G]
        self.timings["fisher_s"] = time.perf_counter() - t

    def row_info(self) -> dict:
        return {"kwon_samples": self.samples, "tuned_sites": self.tuned}

    # ------------------------------------------------------------ steps 2-3
    def masks(self, budget: float, rearranged: bool = True) -> list[list[int]]:
        ctx = self.ctx
        kinds = [k for _, k in ctx.site_keys]
        keeps = search(self.importance, kinds, ctx.costs, ctx.budget(budget))
        if rearranged and self.do_rearrange:
            keeps = [rearrange(k, g.T @ g) for k, g in zip(keeps, self.G)]
        return keeps

    def plan(self, budget: float) -> PrunePlan:
        t = time.perf_counter()
        keeps = self.masks(budget)
        self.timings["search_s"] = time.perf_counter() - t
        scales = [None] * len(keeps)
        if self.do_tune and budget < 1:
            t = time.perf_counter()
            scales = self._tune(keeps, self.masks(math.sqrt(budget), rearranged=False))
            self.timings["tune_s"] = time.perf_counter() - t
        self.tuned = sum(s is not None for s in scales)
        plan = self.new_plan(keeps, budget=budget)
        for i, (li, kind) in enumerate(self.ctx.site_keys):
            if scales[i] is not None:
                site, sp = self.ctx.site(i), plan.layers[li][kind]
                W = site.consumer_linear.weight.detach()
                sp.weight = W[:, unit_columns(sp.keep, site.cols_per_unit)].double() * \
                    scales[i].repeat_interleave(site.cols_per_unit)
        return plan

    # ------------------------------------------------------------ step 4
    def _tune(self, keeps, teacher_keeps):
        """Per layer (one walk, streams 'teacher' and 'student'): targets from the teacher pass, then per site
        (attention first, so the FFN sees the tuned attention) the scales from the student pass."""
        ctx = self.ctx
        index = {key: i for i, key in enumerate(ctx.site_keys)}
        last = len(ctx.adapter.layers(ctx.model)) - 1
        cls_head = type(ctx.model).__name__.endswith("ForSequenceClassification") and \
            ctx.adapter.family in ("bert", "distilbert")
        if any(ctx.adapter.residual(layer, k) is None for layer in ctx.adapter.layers(ctx.model)
               for k in ctx.adapter.sites(layer)):
            log.info("kwon: %s gives no linear residual input (sub-layer outputs are normed before the add): "
                     "the tuning target has no residual term there", ctx.adapter.family)

        def vec(keep, n, values=None):
            v = torch.zeros(n, dtype=torch.float32)
            v[keep] = 1 if values is None else values.float()
            return v

        scales = [None] * len(keeps)
        state = {"active": True}

        def visit(li, layer, _stats, run):
            sites = ctx.adapter.sites(layer)
            ids = {kind: index[(li, kind)] for kind in sites}
            cur = {k: vec(teacher_keeps[ids[k]], ctx.n_units[ids[k]]) for k in sites}
            with hooks() as hs:
                hs += [s.consumer_linear.register_forward_pre_hook(_mask_hook(cur, k, s.cols_per_unit))
                       for k, s in sites.items()]
                targets = self._teacher_targets(layer, sites, run)
                cur.update({k: vec(keeps[ids[k]], ctx.n_units[ids[k]]) for k in sites})
                for kind in sites:
                    if not state["active"]:
                        break
                    if li == 0 and kind == "attn":  # released: layer 0's heads are not tuned
                        continue
                    i = ids[kind]
                    sol = self._solve(layer, sites[kind], kind, keeps[i], targets[kind], run,
                                      cls_only=cls_head and li == last and kind == "ffn")
                    if sol is None:
                        log.info("kwon: mask tuning stopped at layer %d (%s): failed or |scale| > %g", li, kind,
                                 self.max_scale)
                        state["active"] = False
                        break
                    scales[i] = sol
                    cur[kind] = vec(keeps[i], ctx.n_units[i], sol)
                run.all("student")  # the student's outputs with the tuned scales feed the next layer

        walk(ctx.model, ctx.adapter, {"teacher": self.cap, "student": self.cap}, ctx.device, visit=visit,
             desc="kwon: mask tuning")
        return scales

    def _teacher_targets(self, layer, sites, run) -> dict[str, list[torch.Tensor]]:
        """Per site and batch, the teacher's W z_T + x_T (its consumer output minus the bias, plus its residual
        input), float32."""
        out: dict = {k: [] for k in sites}
        with _Taps(self.ctx.adapter, layer, sites, run) as taps:
            for i in range(len(run.streams["teacher"].hidden)):
                run("teacher", i)
                for k, s in sites.items():
                    b = s.consumer_linear.bias
                    wz = taps.rec[k]["out"] - (0.0 if b is None else b.detach().double().cpu())
                    out[k].append((wz + taps.residual(k)).float())
        return out

    def _solve(self, layer, site, kind, keep, targets, run, cls_only=False):
        """Scales s (k,) minimising Σ_t ‖Σ_u s_u W_u z_tu (+ c·1 for heads) − (T_t − x_S,t)‖² + damp²‖s − 1‖²,
        from statistics over the kept columns only ((k·cpu)², not n²) of the student's masked consumer input;
        None when the solve fails or a scale leaves [−max_scale, max_scale]."""
        if not keep:
            return torch.zeros(0, dtype=torch.float64)
        cols = unit_columns(keep, site.cols_per_unit)
        W = site.consumer_linear.weight.detach().double().cpu()[:, cols]
        n, d = W.shape[1], W.shape[0]
        G, M = torch.zeros(n, n, dtype=torch.float64), torch.zeros(d, n, dtype=torch.float64)
        s1, t_sum, count = torch.zeros(n, dtype=torch.float64), torch.zeros(d, dtype=torch.float64), 0
        # registered after the mask hook, so z is the student's masked input
        with _Taps(self.ctx.adapter, layer, {kind: site}, run, {kind: cols}) as taps:
            for i in range(len(run.streams["student"].hidden)):
                run("student", i)
                z = taps.rec[kind]["z"]
                T = targets[i].double() - taps.residual(kind)
                if cls_only:
                    rows = _first_tokens(run.lengths())
                    z, T = z[rows], T[rows]
                G.add_(z.T @ z)
                M.add_(T.T @ z)
                s1.add_(z.sum(0))
                t_sum.add_(T.sum(0))
                count += z.shape[0]
        A, r = tuning_system(G, M, s1, t_sum, count, W, list(range(len(keep))), site.cols_per_unit,
                             ones=kind == "attn")
        x = damped_solve(A, r, len(keep), self.damping)[:len(keep)]
        if not torch.isfinite(x).all() or float(x.abs().max()) > self.max_scale:
            return None
        return x
