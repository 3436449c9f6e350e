"""STAT's correction (STAT.md §3.3): the least-squares fit of the dropped units' activations from the kept
ones, folded into the consumer, so it needs no new module.

| symbol | shape          | meaning                                                        |
|--------|----------------|----------------------------------------------------------------|
| I, E   | k·c, (n−k)·c   | kept and dropped columns                                       |
| X      | k·c × (n−k)·c  | Z_E ≈ Z_I X (from the Gram: ``lstsq_from_gram``)               |
| W'     | d × k·c        | W_I + W_E Xᵀ, the new consumer weight                          |
| Δb     | d              | W_E (μ_E − Xᵀ μ_I): the intercept, with the centred Gram        |
"""
from __future__ import annotations

import torch

from ...core.linalg import lstsq_from_gram, ridge_solve
from ...core.plan import SitePlan
from ...core.units import unit_columns


def fold(site, G: torch.Tensor, st: dict, keep: list[int], correction: str, ridge: float) -> SitePlan:
    """The site plan for ``keep`` with the LS correction of the dropped units (``correction``: lstsq_bias,
    lstsq, none). ``G`` is the float64 Gram, centred for lstsq_bias; ``st`` holds Σz and N."""
    sp = SitePlan(keep=keep)
    drop = sorted(set(range(site.n_units)) - set(keep))
    if correction == "none" or not drop:
        return sp
    I = unit_columns(keep, site.cols_per_unit, G.device)
    E = unit_columns(drop, site.cols_per_unit, G.device)
    W = site.consumer_linear.weight.detach().to(G.device, torch.float64)
    X = lstsq_from_gram(G, I, E, ridge)
    sp.weight = (W[:, I] + W[:, E] @ X.T).float().cpu()
    if correction == "lstsq_bias":
        mu = st["s1"].to(G.device, torch.float64) / max(st["n"], 1)
        sp.bias_delta = (W[:, E] @ (mu[E] - X.T @ mu[I])).float().cpu()
    return sp


def fold_to_dense(site, a: dict, keep: list[int], correction: str, ridge: float) -> SitePlan:
    """The dense-target fold: from G' = Z'ᵀZ' (pruned path), C = Z'ᵀZ_d (pruned × dense activations) and
    their sums, W_new = W · C[I]ᵀ (G'_II)⁻¹, so the kept units of the pruned path reproduce the dense
    consumer output (+ intercept: Δb = W μ_d − W_new μ'_I)."""
    if correction == "none":
        return SitePlan(keep=keep)
    G, C, n = a["G"], a["C"], max(a["n"], 1)
    I = unit_columns(keep, site.cols_per_unit, G.device)
    W = site.consumer_linear.weight.detach().to(G.device, torch.float64)  # (d, n) dense consumer
    mu_p, mu_d = a["s1"] / n, a["sd"] / n
    if correction == "lstsq_bias":
        G = G - n * torch.outer(mu_p, mu_p)
        C = C - n * torch.outer(mu_p, mu_d)
    X = ridge_solve(G[I][:, I], C[I], ridge) if len(keep) else C[I]
    Wn = W @ X.T  # (d, k·c): maps kept pruned-path activations onto the dense output
    sp = SitePlan(keep=keep, weight=Wn.float().cpu())
    if correction == "lstsq_bias":
        sp.bias_delta = (W @ mu_d - Wn @ mu_p[I]).float().cpu()
    return sp
