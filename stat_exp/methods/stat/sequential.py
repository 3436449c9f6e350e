"""STAT's sequential variants: they walk the model being pruned, so each layer's statistics come from
the already-pruned layers before it (sizes always come from the dense allocation).

- ``prune_sequential`` (propagate=pruned): per layer, statistics on the pruned path, select (query heads under GQA:
  within the dense plan's KV groups; or keep the dense plan's units: reselect=false), fold.
- ``dense_target`` (propagate=pruned, target=dense): two streams per layer, dense and pruned; the fold
  fits the dense consumer output from the pruned path's kept units, undoing upstream error.
- ``prune_ffn_first`` (order=ffn_first, the released order): every FFN from the dense statistics, then
  the heads from statistics recomputed on the FFN-pruned model.
- ``amplification`` (allocation=propagated): how much an error at each layer's output grows by the last
  layer's, measured on a pruned copy of each layer (the model itself is not changed).
"""
from __future__ import annotations

import copy
import logging

from ...core.plan import PrunePlan
from ...engine.capture import hooks, real_tokens, walk
from ...engine.saving import finalize
from ...engine.surgery import apply_site
from .fold import fold, fold_to_dense
from .select import factor, select, within_groups
from .statistics import gram, site_stat

log = logging.getLogger("stat_exp")


def _keep(stat, site, st: dict, i: int, fixed: list | None) -> list[int]:
    """Kept units of site ``i`` (the walked model's ``site``, not yet pruned): the dense plan's (``fixed``, with
    reselect=false), or chosen again from its statistics on the pruned path, as many as the dense allocation gives
    it. Query heads under GQA (``site.groups``) are chosen again among the heads of the KV groups the dense plan
    keeps there, so the shared K/V the plan pays for never grows."""
    o = stat.opts
    if not o.reselect:
        return fixed[i]
    G = gram(st, o.correction == "lstsq_bias", stat.ctx.device)
    if site.groups is not None:
        return within_groups(site, G, fixed[i], o.head_space)
    f = factor(site, G, o.head_space, o.ridge)
    return select(o.selection, f["perm"], stat.counts_now[i], stat.ctx.site(i), stat.ctx.seed, i)


def _prune_layer(stat, layer, plans: dict) -> None:
    sites = stat.ctx.adapter.sites(layer)
    for kind, sp in plans.items():
        apply_site(sites[kind], sp)
    stat.ctx.adapter.after_resize(layer)


def prune_sequential(stat, model, budget: float, fixed: list | None = None) -> PrunePlan:
    """Per layer, in order: the statistics of its sites on the model whose earlier layers are pruned, their kept
    units (``_keep``: ``fixed[i]`` is site i's in the dense plan), the fold, the surgery."""
    ctx, o = stat.ctx, stat.opts
    index = {key: i for i, key in enumerate(ctx.site_keys)}
    layers: list[dict] = []

    def visit(li, layer, stats, run):
        sites, lp = ctx.adapter.sites(layer), {}
        for kind, acc in stats.items():
            st = site_stat(acc)
            lp[kind] = fold(sites[kind], stat.fit_gram(st), st, _keep(stat, sites[kind], st, index[(li, kind)], fixed), o.correction, o.ridge)
        _prune_layer(stat, layer, lp)
        layers.append(lp)
        run.forget("main")
        stats.clear()  # the walk would keep every layer's accumulators (a 1.5B model's Grams: 4.6 GB more)

    if o.target == "dense":
        walk(model, ctx.adapter, {"dense": stat.cap, "pruned": stat.cap}, ctx.device,
             visit=_dense_target_visit(stat, index, layers, fixed), desc="stat: prune (dense target)")
    else:
        walk(model, ctx.adapter, stat.cap, ctx.device, stat.new_acc, visit, desc="stat: prune (sequential)")
    finalize(model, ctx.adapter)
    return PrunePlan(layers, meta={"method": stat.name, "budget": budget, "counts": stat.counts_now})


def _dense_target_visit(stat, index, layers, fixed):
    """Per batch: the dense stream through the dense layer gives the target Z_d, the pruned stream gives
    Z'; accumulate G' = Z'ᵀZ', C = Z'ᵀZ_d and the sums; then select on G', fold, prune the layer."""
    ctx, o = stat.ctx, stat.opts

    def visit(li, layer, _stats, run):
        sites = ctx.adapter.sites(layer)
        acc = {k: {"G": 0, "C": 0, "s1": 0, "sd": 0, "n": 0} for k in sites}
        grab: dict = {}
        with hooks() as hs:
            for k, s in sites.items():
                hs.append(s.consumer_linear.register_forward_pre_hook(
                    lambda mod, a, k=k: grab.__setitem__(k, run.tokens(a[0]).double())))
            for b in range(len(run.streams["pruned"].hidden)):
                run("dense", b)
                zd = dict(grab)
                run("pruned", b)
                for k in sites:
                    zp, zt, a = grab[k], zd[k], acc[k]
                    a["G"], a["C"] = a["G"] + zp.T @ zp, a["C"] + zp.T @ zt
                    a["s1"], a["sd"], a["n"] = a["s1"] + zp.sum(0), a["sd"] + zt.sum(0), a["n"] + zp.shape[0]
        lp = {}
        for k, site in sites.items():
            i, a = index[(li, k)], acc[k]
            keep = _keep(stat, site, {"G": a["G"], "s1": a["s1"], "n": a["n"]}, i, fixed)
            lp[k] = fold_to_dense(site, a, keep, o.correction, o.ridge)
        _prune_layer(stat, layer, lp)
        layers.append(lp)
        run.forget("pruned")  # the dense stream's outputs came from the dense layer: kept

    return visit


def prune_ffn_first(stat, model, budget: float) -> PrunePlan:
    ctx, o = stat.ctx, stat.opts
    plan = stat.plan(budget)
    stat.counts_now = plan.meta["counts"]
    model_layers = ctx.adapter.layers(model)
    for li, layer in enumerate(model_layers):
        _prune_layer(stat, layer, {"ffn": plan.layers[li]["ffn"]})
    stats, _ = walk(model, ctx.adapter, stat.cap, ctx.device, stat.new_acc, desc="stat: head statistics")
    for i, (li, kind) in enumerate(ctx.site_keys):
        if kind != "attn":
            continue
        st = site_stat(stats[li]["attn"])
        site = ctx.adapter.sites(model_layers[li])["attn"]
        plan.layers[li]["attn"] = fold(site, stat.fit_gram(st), st, _keep(stat, site, st, i, None), o.correction, o.ridge)
        _prune_layer(stat, model_layers[li], {"attn": plan.layers[li]["attn"]})
    finalize(model, ctx.adapter)
    return plan


def amplification(stat, counts: list[int]) -> list[float]:
    """Per layer l, A_l = Π_{m>l} ρ_m: the factor by which a relative error at layer l's output has grown by the
    last layer's output. Relative per token, as the next RMS/LayerNorm sees it: with h, h̃ the dense and the pruned
    model's streams at layer m's input, L_m the layer, L̃_m a copy of it pruned and folded at ``counts``, and sums
    over the calibration batches' real tokens t,
        ρ_m = Σ_t ‖L̃_m(h̃)_t − L̃_m(h)_t‖² / ‖L_m(h)_t‖²  ÷  Σ_t ‖h̃_t − h_t‖² / ‖h_t‖².
    (Unweighted sums would let the few tokens with massive activations decide every gain.) One walk of the dense
    model, three layer forwards per batch: the dense layer on h, the pruned copy on h and on h̃."""
    ctx, o = stat.ctx, stat.opts
    index = {key: i for i, key in enumerate(ctx.site_keys)}
    gains: list[float] = []

    def rel(err, ref, cap, b):  # Σ_t ‖err_t‖² / ‖ref_t‖² over the batch's real tokens
        e, r = (real_tokens(x, cap, b).double() for x in (err, ref))
        return float((e.square().sum(-1) / r.square().sum(-1).clamp_min(1e-30)).sum())

    def visit(li, layer, _stats, run):
        pruned, plans = copy.deepcopy(layer), {}
        for kind in ctx.adapter.sites(layer):
            i = index[(li, kind)]
            plans[kind] = stat.fold(i, select(o.selection, stat.factors[i]["perm"], counts[i], ctx.site(i), ctx.seed, i))
        _prune_layer(stat, pruned, plans)
        dense, mine = run.streams["dense"], run.streams["pruned"]
        num = den = 0.0
        for b in range(len(dense.hidden)):
            out = run("dense", b)
            grown = run("pruned", b, pruned) - run("dense", b, pruned, record=False)
            num += rel(grown, out, dense, b)
            den += rel(mine.hidden[b] - dense.hidden[b], dense.hidden[b], dense, b)
        gains.append(num / den if den > 0 else 1.0)  # layer 0: no incoming error (its gain is never used)

    walk(ctx.model, ctx.adapter, {"dense": stat.cap, "pruned": stat.cap}, ctx.device, visit=visit,
         desc="stat: measure propagation")
    amp = [1.0] * len(gains)
    for li in range(len(gains) - 2, -1, -1):
        amp[li] = amp[li + 1] * gains[li + 1]
    log.info("stat: measured growth to the last layer, per layer: %s", " ".join(f"{a:.3g}" for a in amp))
    return amp
