"""STAT (Flynn et al. 2024, STAT.md): pivoted-QR interpolative decompositions of each site's
activations choose the heads (KV groups) and neurons to keep; the least-squares fit of the dropped
units from the kept ones is folded into the consumer. One dense calibration pass gives every site's
Gram, pivot order and error curve e(k) for all k, so a whole budget curve shares one factorization.

Options (all ablations):
- correction: lstsq_bias (ours: LS with intercept → consumer bias) | lstsq (paper) | none
- selection:  qr | random | magnitude (sizes always come from the QR error curves)
- allocation: greedy (ours: marginal error per FLOP) | paper (depth-weighted head/neuron split search) | uniform
- propagate:  dense (one pass, as the released code) | pruned (sequential, statistics on pruned inputs)
- head_space: output (ours: columns vec(W_o,h c_h)) | context (paper: columns vec(c_h))
- sketch:     gram | tsqr | countsketch | gaussian (sketch_dim rows, default 4n)
- normalize:  residual (ours: error / residual-stream energy at the layer input) | layer (/ the layer's
              branch-output energy) | none
- target:     self (fit the layer's own dropped units) | dense (propagate=pruned only: fit the dense
              model's consumer output from the pruned path's kept units, undoing upstream error)
- order:      joint (all sites from the dense pass) | ffn_first (released code: prune every FFN, recompute
              the head statistics on the FFN-pruned model, then prune heads; propagate=dense only)
- floor:      greedy allocation keeps at least ⌈floor · budget · n⌉ units of every site (0 = pure greedy)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import torch

from .. import allocation as alloc
from ..capture import walk
from ..linalg import block_sum, block_trace, centered, lstsq_from_gram, make_accumulator, pivoted_cholesky
from ..plan import PrunePlan, SitePlan
from ..surgery import apply_site, finalize, unit_index
from .base import Method

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # bump when the statistics' meaning changes

VARIANTS = {
    "stat": {},
    "stat_paper": {"correction": "lstsq", "allocation": "paper", "head_space": "context", "propagate": "dense",
                   "order": "ffn_first", "floor": 0.0, "normalize": "none"},
    "stat_nocorr": {"correction": "none"},
}


class STAT(Method):
    name = "stat"

    def __init__(self, correction="lstsq_bias", selection="qr", allocation="greedy", propagate="dense",
                 head_space="output", sketch="gram", sketch_dim=None, ridge=1e-8, cache=True,
                 normalize="residual", floor=0.5, target="self", order="joint", **options):
        super().__init__(**options)
        choices = {"correction": ("lstsq_bias", "lstsq", "none"), "selection": ("qr", "random", "magnitude"),
                   "allocation": ("greedy", "paper", "uniform"), "propagate": ("dense", "pruned"),
                   "head_space": ("output", "context"), "sketch": ("gram", "tsqr", "countsketch", "gaussian"),
                   "normalize": ("layer", "residual", "none"), "target": ("self", "dense"),
                   "order": ("joint", "ffn_first")}
        for key, value in dict(correction=correction, selection=selection, allocation=allocation,
                               propagate=propagate, head_space=head_space, sketch=sketch,
                               normalize=normalize, target=target, order=order).items():
            if value not in choices[key]:
                from ..errors import UserError

                raise UserError(f"method option {key}={value!r}; choose one of {', '.join(choices[key])}")
        self.correction, self.selection, self.allocation = correction, selection, allocation
        self.propagate, self.head_space, self.sketch, self.sketch_dim = propagate, head_space, sketch, sketch_dim
        self.ridge, self.cache, self.normalize, self.floor = ridge, cache, normalize, float(floor)
        self.target, self.order = target, order
        if target == "dense" and propagate != "pruned":
            from ..errors import UserError

            raise UserError("method option target=dense needs propagate=pruned (with one dense pass the "
                            "activations are the dense ones already)")

    # ------------------------------------------------------------ statistics (one dense pass)
    def _new_acc(self, kind):
        return make_accumulator(self.sketch, self.sketch_dim, self.ctx.seed)

    def calibrate(self, ctx, cap) -> None:
        self.ctx, self.timings = ctx, {}
        self.cap0 = dataclasses.replace(cap, hidden=list(cap.hidden))
        path = self._cache_path()
        t = time.perf_counter()
        if path is not None and path.exists():
            log.info("STAT statistics from cache %s", path)
            self.stats = torch.load(path, weights_only=False)
        else:
            resid = []  # Σ‖h‖² of each layer's input (the residual stream the site writes into)

            def record(li, layer, stats):
                resid.append(float(sum(h.float().square().sum() for h in cap.hidden)))
                return False

            raw = walk(ctx.model, ctx.adapter, cap, ctx.device, self._new_acc, record, desc="stat: calibrate")
            self.stats = [{k: {"G": a.gram().float().cpu(), "s1": a.s1.cpu(), "n": a.n, "resid": r}
                           for k, a in layer.items()} for layer, r in zip(raw, resid)]
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                torch.save(self.stats, tmp)
                tmp.replace(path)
        self.timings["statistics_s"] = _elapsed(t, ctx.device)
        t = time.perf_counter()
        self.factors = [self._factor(i, self.stat(i)) for i in range(len(ctx.site_keys))]
        self.timings["factorization_s"] = _elapsed(t, ctx.device)

    def _cache_path(self) -> Path | None:
        ctx = self.ctx
        if not (self.cache and ctx.cache_dir and ctx.cache_key):
            return None
        key = {**ctx.cache_key, "sketch": self.sketch, "sketch_dim": self.sketch_dim, "v": CACHE_VERSION}
        h = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return Path(ctx.cache_dir) / f"stat-{h}.pt"

    def _gram(self, st) -> torch.Tensor:
        G = st["G"].to(self.ctx.device, torch.float64)
        return centered(G, st["s1"].to(G.device), st["n"]) if self.correction == "lstsq_bias" else G

    # ------------------------------------------------------------ factorization per site
    def _factor(self, i: int, st) -> dict:
        site = self.ctx.site(i)
        G = self._gram(st)
        W = site.consumer_linear.weight.detach().to(G.device, torch.float64)  # (d, n)
        energy = float(((W @ G) * W).sum())  # ‖Z Wᵀ‖²: the site's output energy
        if site.kind == "ffn":
            D = W.norm(dim=0)  # paper: scale neurons by their output weight norm
            P, _, err2 = pivoted_cholesky(D[:, None] * G * D[None, :])
        else:
            size = site.cols_per_unit
            Gu = block_trace(G, size) if self.head_space == "context" else block_sum(G * (W.T @ W), size)
            P, _, _ = pivoted_cholesky(Gu)
            err2 = torch.stack([self._output_error(G, W, P[:k], P[k:], size) for k in range(len(P) + 1)])
        return {"perm": P.cpu(), "err2": err2.cpu().clamp_min(0), "energy": energy}

    def _output_error(self, G, W, keep, drop, size) -> torch.Tensor:
        """‖(Z_E − Z_I X) W_Eᵀ‖²_F: the dropped units' LS residual seen through the consumer."""
        if len(drop) == 0:
            return torch.zeros((), dtype=torch.float64, device=G.device)
        I, E = unit_index(keep.tolist(), size, G.device), unit_index(drop.tolist(), size, G.device)
        X = lstsq_from_gram(G, I, E, self.ridge)
        res = G[E][:, E] - G[E][:, I] @ X
        WE = W[:, E]
        return ((WE @ res) * WE).sum()

    # ------------------------------------------------------------ allocation
    def _curves(self):
        """Per site: error curve normalised by its layer's output energy (optionally depth-weighted)."""
        energy = {}
        for i, ((li, _), f) in enumerate(zip(self.ctx.site_keys, self.factors)):
            if self.normalize == "layer":  # the layer's two branch outputs
                energy[li] = energy.get(li, 0.0) + f["energy"]
            elif self.normalize == "residual":  # the residual stream at the layer's input
                energy[li] = self.stat(i).get("resid", 1.0)
            else:
                energy[li] = 1.0
        L = 1 + max(li for li, _ in self.ctx.site_keys)
        out = []
        for (li, _), f in zip(self.ctx.site_keys, self.factors):
            w = (math.sqrt(L - li) + 1) if self.allocation == "paper" else 1.0
            out.append(f["err2"].double() * w / max(energy[li], 1e-30))
        return out

    def _marginal_scores(self, curves, per_flop=True):
        """Score of pivot j = error added by dropping it, per FLOP saved; envelope non-increasing in j."""
        scores = []
        for e, c in zip(curves, self.ctx.costs):
            m = (e[:-1] - e[1:]).clamp_min(0) / (c if per_flop else 1.0)
            scores.append(torch.flip(torch.cummax(torch.flip(m, [0]), 0).values, [0]))
        return scores

    def counts(self, budget: float) -> list[int]:
        ctx, B = self.ctx, budget * self.ctx.dense_flops
        if self.allocation == "uniform":
            return alloc.uniform(ctx.n_units, ctx.costs, B)
        curves = self._curves()
        if self.allocation == "greedy":
            scores = self._marginal_scores(curves)
            for sc in scores:  # never drop below floor × budget × units in any site (always feasible)
                sc[: int(math.ceil(self.floor * budget * len(sc)))] = float("inf")
            return [len(k) for k in alloc.by_score(scores, ctx.costs, B)]
        return self._paper_counts(curves, B)

    def _paper_counts(self, curves, B):
        """Search over the number of kept attention units: heads by depth-weighted error, the rest of
        the budget to neurons by depth-weighted error (the split is computed, not QQP's 0.6623)."""
        ctx = self.ctx
        att = [i for i, (_, k) in enumerate(ctx.site_keys) if k == "attn"]
        ffn = [i for i, (_, k) in enumerate(ctx.site_keys) if k == "ffn"]
        sc = self._marginal_scores(curves, per_flop=False)
        best = None
        total_heads = sum(ctx.n_units[i] for i in att)
        for H in range(total_heads + 1):
            keep_a = alloc.by_score([sc[i] for i in att], [1.0] * len(att), H)
            head_flops = sum(len(k) * ctx.costs[i] for k, i in zip(keep_a, att))
            if head_flops > B:
                continue
            keep_f = alloc.by_score([sc[i] / ctx.costs[i] for i in ffn], [ctx.costs[i] for i in ffn], B - head_flops)
            err = sum(float(curves[i][len(k)]) for k, i in zip(keep_a + keep_f, att + ffn))
            if best is None or err < best[0]:
                best = (err, {i: len(k) for k, i in zip(keep_a + keep_f, att + ffn)})
        return [best[1][i] for i in range(len(ctx.site_keys))]

    # ------------------------------------------------------------ selection and fold
    def _select(self, i: int, perm: torch.Tensor, k: int) -> list[int]:
        n = self.ctx.n_units[i]
        if self.selection == "qr":
            return sorted(perm[:k].tolist())
        if self.selection == "random":
            g = torch.Generator().manual_seed(self.ctx.seed * 7919 + i)
            return sorted(torch.randperm(n, generator=g)[:k].tolist())
        site = self.ctx.site(i)
        norm = site.consumer_linear.weight.detach().float().square().sum(0).reshape(n, -1).sum(1)
        return alloc.top_k(norm, k)

    def _fold(self, site, st, keep: list[int]) -> SitePlan:
        sp = SitePlan(keep=keep)
        drop = sorted(set(range(site.n_units)) - set(keep))
        if self.correction == "none" or not drop:
            return sp
        G = self._gram(st)
        I = unit_index(keep, site.cols_per_unit, G.device)
        E = unit_index(drop, site.cols_per_unit, G.device)
        W = site.consumer_linear.weight.detach().to(G.device, torch.float64)
        X = lstsq_from_gram(G, I, E, self.ridge)  # Z_E ≈ Z_I X  (k·c × (n−k)·c)
        sp.weight = (W[:, I] + W[:, E] @ X.T).float().cpu()
        if self.correction == "lstsq_bias":
            mu = st["s1"].to(G.device, torch.float64) / max(st["n"], 1)
            sp.bias_delta = (W[:, E] @ (mu[E] - X.T @ mu[I])).float().cpu()
        return sp

    def plan(self, budget: float) -> PrunePlan:
        t = time.perf_counter()
        counts = self.counts(budget)
        self.timings["allocation_s"] = _elapsed(t, self.ctx.device)
        n_layers = 1 + max(li for li, _ in self.ctx.site_keys)
        layers: list[dict] = [{} for _ in range(n_layers)]
        for i, (li, kind) in enumerate(self.ctx.site_keys):
            keep = self._select(i, self.factors[i]["perm"], counts[i])
            layers[li][kind] = self._fold(self.ctx.site(i), self.stat(i), keep)
        return PrunePlan(layers, meta={"method": self.name, "budget": budget, "counts": counts})

    def prune(self, model, budget: float) -> PrunePlan:
        t = time.perf_counter()
        if self.propagate == "pruned":
            plan = self._prune_sequential(model, budget)
        elif self.order == "ffn_first":
            plan = self._prune_ffn_first(model, budget)
        else:
            plan = super().prune(model, budget)
        self.timings["fold_s"] = _elapsed(t, self.ctx.device) - self.timings.get("allocation_s", 0.0)
        return plan

    def _prune_sequential(self, model, budget):
        """Walk the layers of ``model`` in order on the pruned model's own activations: recompute each
        site's statistics, select and fold with the sizes allocated from the dense pass."""
        ctx, counts = self.ctx, self.counts(budget)
        index = {key: i for i, key in enumerate(ctx.site_keys)}
        layers: list[dict] = []
        new_ctx = dataclasses.replace(ctx, model=model, site_keys=[], costs=[], n_units=[], dense_flops=0)

        def on_layer(li, layer, stats):
            sites, lp = ctx.adapter.sites(layer), {}
            for kind, acc in stats.items():
                i = index[(li, kind)]
                st = {"G": acc.gram(), "s1": acc.s1, "n": acc.n}
                f = self._factor_with(new_ctx, i, st)
                lp[kind] = self._fold(sites[kind], st, self._select(i, f["perm"], counts[i]))
            for kind, sp in lp.items():
                apply_site(sites[kind], sp)
            ctx.adapter.after_resize(layer)
            layers.append(lp)
            return True

        cap = dataclasses.replace(self.cap0, hidden=list(self.cap0.hidden))
        if self.target == "dense":
            self._walk_dense_target(model, cap, counts, index, new_ctx, layers)
        else:
            walk(model, ctx.adapter, cap, ctx.device, self._new_acc, on_layer, desc="stat: prune (sequential)")
        finalize(model, ctx.adapter)
        return PrunePlan(layers, meta={"method": self.name, "budget": budget, "counts": counts})

    def _prune_ffn_first(self, model, budget):
        """Released order: FFNs from the dense statistics, then heads from statistics recomputed on
        the FFN-pruned model (sizes from the dense allocation)."""
        ctx, plan = self.ctx, self.plan(budget)
        layers = ctx.adapter.layers(model)
        for li, layer in enumerate(layers):
            apply_site(ctx.adapter.sites(layer)["ffn"], plan.layers[li]["ffn"])
            ctx.adapter.after_resize(layer)
        cap = dataclasses.replace(self.cap0, hidden=list(self.cap0.hidden))
        stats = walk(model, ctx.adapter, cap, ctx.device, self._new_acc, desc="stat: head statistics")
        new_ctx = dataclasses.replace(ctx, model=model, site_keys=[], costs=[], n_units=[], dense_flops=0)
        for i, (li, kind) in enumerate(ctx.site_keys):
            if kind != "attn":
                continue
            a = stats[li]["attn"]
            st = {"G": a.gram(), "s1": a.s1, "n": a.n}
            keep = self._select(i, self._factor_with(new_ctx, i, st)["perm"], plan.meta["counts"][i])
            site = ctx.adapter.sites(layers[li])["attn"]
            plan.layers[li]["attn"] = self._fold(site, st, keep)
            apply_site(site, plan.layers[li]["attn"])
            ctx.adapter.after_resize(layers[li])
        finalize(model, ctx.adapter)
        return plan

    @torch.no_grad()
    def _walk_dense_target(self, model, cap, counts, index, new_ctx, layers):
        """Two streams through each layer: dense inputs → dense activations Z_d (the target), pruned
        inputs → Z'. Per batch, accumulate G' = Z'ᵀZ' and C = Z'ᵀZ_d; select on G', fold
        W_new = W · C[I]ᵀ (G'_II)⁻¹ (+ intercept: bias += W μ_d − W_new μ'_I)."""
        from tqdm.auto import tqdm

        from ..capture import _run_layer

        ctx, dev = self.ctx, self.ctx.device
        dense = dataclasses.replace(cap, hidden=list(cap.hidden))
        for li, layer in enumerate(tqdm(ctx.adapter.layers(model), desc="stat: prune (dense target)", leave=False)):
            home = next(layer.parameters()).device
            layer.to(dev)
            sites = ctx.adapter.sites(layer)
            acc = {k: {"G": 0, "C": 0, "s1": 0, "sd": 0, "n": 0} for k in sites}
            grab: dict = {}
            hooks = [s.consumer_linear.register_forward_pre_hook(
                lambda mod, a, k=k: grab.__setitem__(k, a[0].reshape(-1, a[0].shape[-1]).double()))
                for k, s in sites.items()]
            d_out, p_out = [], []
            try:
                for b in range(len(cap.hidden)):
                    d_out.append(_run_layer(layer, dense, b, dev))
                    zd = dict(grab)
                    p_out.append(_run_layer(layer, cap, b, dev))
                    mask = cap.token_mask[b] if cap.token_mask else None
                    for k in sites:
                        zp, zt = grab[k], zd[k]
                        if mask is not None:
                            keep = mask.reshape(-1).to(zp.device)
                            zp, zt = zp[keep], zt[keep]
                        a = acc[k]
                        a["G"] = a["G"] + zp.T @ zp
                        a["C"] = a["C"] + zp.T @ zt
                        a["s1"], a["sd"], a["n"] = a["s1"] + zp.sum(0), a["sd"] + zt.sum(0), a["n"] + zp.shape[0]
            finally:
                for h in hooks:
                    h.remove()
            lp = {}
            for k, site in sites.items():
                i, a = index[(li, k)], acc[k]
                st = {"G": a["G"], "s1": a["s1"], "n": a["n"]}
                keep = self._select(i, self._factor_with(new_ctx, i, st)["perm"], counts[i])
                lp[k] = self._fold_to_dense(site, a, keep)
            for k, sp in lp.items():
                apply_site(sites[k], sp)
            ctx.adapter.after_resize(layer)
            layers.append(lp)
            dense.hidden = [o.to(dense.hidden[0].device) for o in d_out]
            cap.hidden = [_run_layer(layer, cap, b, dev).to(cap.hidden[0].device) for b in range(len(cap.hidden))]
            layer.to(home)
            del p_out

    def _fold_to_dense(self, site, a, keep: list[int]) -> SitePlan:
        if self.correction == "none":
            return SitePlan(keep=keep)
        G, C, n = a["G"], a["C"], max(a["n"], 1)
        I = unit_index(keep, site.cols_per_unit, G.device)
        W = site.consumer_linear.weight.detach().to(G.device, torch.float64)  # (d, n) dense consumer
        mu_p, mu_d = a["s1"] / n, a["sd"] / n
        if self.correction == "lstsq_bias":
            G = G - n * torch.outer(mu_p, mu_p)
            C = C - n * torch.outer(mu_p, mu_d)
        Gii = G[I][:, I]
        lam = self.ridge * float(torch.diagonal(Gii).mean().clamp_min(1e-300)) if len(keep) else 0.0
        X = torch.linalg.lstsq(Gii + lam * torch.eye(len(I), dtype=G.dtype, device=G.device), C[I]).solution
        Wn = W @ X.T  # (d, k·c): maps kept pruned-path activations onto the dense output
        sp = SitePlan(keep=keep, weight=Wn.float().cpu())
        if self.correction == "lstsq_bias":
            sp.bias_delta = (W @ mu_d - Wn @ mu_p[I]).float().cpu()
        return sp

    def _factor_with(self, ctx, i, st):
        old, self.ctx = self.ctx, ctx
        try:
            return self._factor(i, st)
        finally:
            self.ctx = old


def _elapsed(t0: float, device) -> float:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def variant(name: str):
    """A registry entry for a named STAT configuration (its rows carry that name)."""
    defaults = VARIANTS[name]

    class Variant(STAT):
        def __init__(self, **options):
            super().__init__(**{**defaults, **options})

    Variant.name = name
    Variant.__name__ = Variant.__qualname__ = "STAT_" + name
    return Variant
