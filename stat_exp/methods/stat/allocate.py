"""STAT's budget allocation: how many units each site keeps, from the error curves e(k)² of every site.

- ``greedy`` (ours): drop pivots in ascending order of marginal error per unit of cost, one global
  threshold; every site keeps ≥ ⌈floor · budget · U⌉ units.
- ``paper``: the released scripts' allocation, step by step (``paper_levels``, ``paper_counts``): weighted
  |R_jj| of the neurons and unsquared head error levels, a search over the average head count that
  matches the head cutoff to twice the mean neuron residual; variant ``bert`` (depth weight √(L−l+1)+1)
  or ``opt`` (levels divided by an exponential fit over depth, heads × 1.125^(H−i)).
- ``uniform``: the same kept fraction everywhere (sizes only; the pivots still choose which).
Curves are normalised per layer by ``normalize``: the residual-stream energy at the layer's input
('residual'), the same read from the layer's median token (N × median ‖h_t‖², 'median': a few attention-sink
tokens with massive activations hold 80-95 % of Qwen2.5's residual energy in layers 2-21 and make those
layers' errors look 5-23× cheaper; measured worse than 'residual' on Qwen2.5, better at FLOPs kept ≤ 0.7 on
SmolLM2: results/findings.md), the layer's branch-output energy ('layer'), or not at all ('none').
"""
from __future__ import annotations

import math

import torch

from ...core import allocation as alloc


def curves(site_keys, factors: list[dict], resid: list[float], normalize: str) -> list:
    """Per site: e(k)² / energy of its layer."""
    energy: dict[int, float] = {}
    for (li, _), f, r in zip(site_keys, factors, resid):  # resid: the residual (or median) energy per site
        if normalize == "layer":  # the layer's two branch outputs
            energy[li] = energy.get(li, 0.0) + f["energy"]
        else:
            energy[li] = r if normalize in ("residual", "median") else 1.0
    return [f["err2"].double() / max(energy[li], 1e-30) for (li, _), f in zip(site_keys, factors)]


def marginal_scores(curves: list, costs: list, per_cost: bool = True) -> list[torch.Tensor]:
    """Score of pivot j = error added by dropping it (per unit of cost: ``costs[i]`` is the site's cost of
    keeping its first k pivots, k = 0…n); envelope non-increasing in j."""
    scores = []
    for e, c in zip(curves, costs):
        m = (e[:-1] - e[1:]).clamp_min(0) / ((c[1:] - c[:-1]) if per_cost else 1.0)
        scores.append(torch.flip(torch.cummax(torch.flip(m, [0]), 0).values, [0]))
    return scores


def greedy_counts(curves: list, costs: list, budget: float, fraction: float, floor: float) -> list[int]:
    """Kept pivots per site: one global threshold on ``marginal_scores``; ``costs[i]``: site i's cost of keeping
    its first k pivots (k = 0…n), so a pivot that opens a new KV group carries that group's cost."""
    scores = marginal_scores(curves, costs)
    for sc in scores:  # never drop below floor × budget × units in any site (always feasible)
        sc[: int(math.ceil(floor * fraction * len(sc)))] = float("inf")
    # pivots in reverse, so that among equal scores the later pivot goes first and the kept ones stay a prefix
    # whose cost is the one charged (a pivot's cost depends on its position when it opens a KV group)
    steps = [(c[1:] - c[:-1]).flip(0) for c in costs]
    return [len(k) for k in alloc.by_score([sc.flip(0) for sc in scores], steps, budget)]


PAPER_SHARES = {"bert": 0.6622759, "opt": 4 / 7}  # φ_ffn as released (QQP's mean length; OPT's 4/7)


def paper_levels(r: list[torch.Tensor], e: list[torch.Tensor], variant: str) -> tuple[list, list]:
    """Weighted neuron scores and head levels (STAT.md §4.1 steps 1-2, and the OPT script's changes).

    r[l]: (n,) |R_jj| of layer l's FFN in pivot order; e[l]: (H,) unsquared head error levels e_l(0…H−1).
    'bert': both × w_l = √(L − l + 1) + 1. 'opt': each divided by exp of a linear fit over depth of log r_l,0
    (log e_l(0)), and heads × 1.125^(H − i)."""
    L = len(r)
    if variant == "bert":
        w = [math.sqrt(L - li + 1) + 1 for li in range(L)]
        return [wl * x.double() for wl, x in zip(w, r)], [wl * x.double() for wl, x in zip(w, e)]
    depth = torch.arange(L, dtype=torch.float64)
    X = torch.stack([torch.ones(L, dtype=torch.float64), depth], 1)  # (L, 2): intercept, slope

    def detrend(xs):
        y = torch.stack([x[0].double().clamp_min(1e-300).log() for x in xs])
        fit = X @ torch.linalg.lstsq(X, y[:, None]).solution[:, 0] if L > 1 else y
        return [x.double() / math.exp(float(f)) for x, f in zip(xs, fit)]

    H = len(e[0])
    bonus = 1.125 ** (H - torch.arange(H, dtype=torch.float64))
    return detrend(r), [x * bonus for x in detrend(e)]


def _kth_largest(values: torch.Tensor, k: int) -> float:
    """The k-th largest value (1-based); −inf past the end (every value is above), +inf for k < 1."""
    if k < 1:
        return math.inf
    if k > len(values):
        return -math.inf
    return float(torch.topk(values, k).values[-1])


def paper_counts(r: list, e: list, ffn_err2: list, phi_ffn: float, budget: float, variant: str) -> tuple[list, list]:
    """Kept (heads, neurons) per layer by the released search (STAT.md §4.1 steps 3-5).

    r, e: weighted levels from ``paper_levels`` ((n,), (H,) per layer); ffn_err2[l]: (n+1,) the neuron error
    curve, so ‖R_l[k:, k:]‖_F = √ffn_err2[l][k]; phi_ffn: the FFN share of a layer's cost; budget: μ."""
    L, H, n = len(r), len(e[0]), len(r[0])
    all_r, all_e, phi_head = torch.cat(r), torch.cat(e), 1.0 - phi_ffn
    above = (lambda x, t: int((x >= t).sum())) if variant == "bert" else (lambda x, t: int((x > t).sum()))

    def neurons(rank: int) -> list[int]:
        tau = _kth_largest(all_r, rank + 1)
        return [int((x > tau).sum()) for x in r]

    def head_cut(h: int) -> float:
        return 0.0 if h == H else _kth_largest(all_e, h * L + (0 if variant == "bert" else 1))

    best = None
    for h in range(math.floor(budget * H), H + 1):
        N = min(n, max(0, math.floor((budget - phi_head * h / H) / phi_ffn * n + 1e-9)))  # 1e-9: rounding
        k = neurons(N * L)
        resid = sum(math.sqrt(float(c[kl])) for c, kl in zip(ffn_err2, k)) / L
        obj = abs(head_cut(h) - 2 * resid)
        if best is None or obj < best[0]:
            best = (obj, h, k)
    _, h, k = best
    k = neurons(math.floor(sum(k) / L) * L)
    heads = [H] * L if h == H else [above(x, head_cut(h)) for x in e]
    return heads, k
