"""STAT's budget allocation: how many units each site keeps, from the error curves e(k)² of every site.

- ``greedy`` (ours): drop pivots in ascending order of marginal error per unit of cost, one global
  threshold; every site keeps ≥ ⌈floor · budget · U⌉ units.
- ``paper``: depth-weighted curves; search over the total number of kept attention units, heads by
  error, the rest of the budget to neurons by error per cost; keep the split of least summed error.
- ``uniform``: the same kept fraction everywhere (sizes only; the pivots still choose which).
Curves are normalised per layer by ``normalize``: the residual-stream energy at the layer's input
('residual'), the layer's branch-output energy ('layer'), or not at all ('none').
"""
from __future__ import annotations

import math

import torch

from ...core import allocation as alloc


def curves(site_keys, factors: list[dict], resid: list[float], normalize: str, depth_weight: bool) -> list:
    """Per site: e(k)² / energy of its layer, times √(L − l) + 1 when ``depth_weight``."""
    energy: dict[int, float] = {}
    for (li, _), f, r in zip(site_keys, factors, resid):
        if normalize == "layer":  # the layer's two branch outputs
            energy[li] = energy.get(li, 0.0) + f["energy"]
        else:
            energy[li] = r if normalize == "residual" else 1.0
    L = 1 + max(li for li, _ in site_keys)
    out = []
    for (li, _), f in zip(site_keys, factors):
        w = (math.sqrt(L - li) + 1) if depth_weight else 1.0
        out.append(f["err2"].double() * w / max(energy[li], 1e-30))
    return out


def marginal_scores(curves: list, costs: list, per_cost: bool = True) -> list[torch.Tensor]:
    """Score of pivot j = error added by dropping it (per unit of cost); envelope non-increasing in j."""
    scores = []
    for e, c in zip(curves, costs):
        m = (e[:-1] - e[1:]).clamp_min(0) / (c if per_cost else 1.0)
        scores.append(torch.flip(torch.cummax(torch.flip(m, [0]), 0).values, [0]))
    return scores


def greedy_counts(curves: list, costs: list, budget: float, fraction: float, floor: float) -> list[int]:
    scores = marginal_scores(curves, costs)
    for sc in scores:  # never drop below floor × budget × units in any site (always feasible)
        sc[: int(math.ceil(floor * fraction * len(sc)))] = float("inf")
    return [len(k) for k in alloc.by_score(scores, costs, budget)]


def paper_counts(site_keys, curves: list, costs: list, n_units: list[int], budget: float) -> list[int]:
    """Search over the number of kept attention units: heads by depth-weighted error, the rest of the
    budget to neurons by depth-weighted error per cost (the split is computed, not QQP's 0.6623)."""
    att = [i for i, (_, k) in enumerate(site_keys) if k == "attn"]
    ffn = [i for i, (_, k) in enumerate(site_keys) if k == "ffn"]
    sc = marginal_scores(curves, costs, per_cost=False)
    best = None
    for H in range(sum(n_units[i] for i in att) + 1):
        keep_a = alloc.by_score([sc[i] for i in att], [1.0] * len(att), H)
        head_cost = sum(len(k) * costs[i] for k, i in zip(keep_a, att))
        if head_cost > budget:
            continue
        keep_f = alloc.by_score([sc[i] / costs[i] for i in ffn], [costs[i] for i in ffn], budget - head_cost)
        err = sum(float(curves[i][len(k)]) for k, i in zip(keep_a + keep_f, att + ffn))
        if best is None or err < best[0]:
            best = (err, {i: len(k) for k, i in zip(keep_a + keep_f, att + ffn)})
    return [best[1][i] for i in range(len(site_keys))]
