"""STAT's correction (STAT.md §3.3): the least-squares fit of the dropped units' activations from the kept
ones, folded into the consumer, so it needs no new module.

| symbol | shape          | meaning                                                        |
|--------|----------------|----------------------------------------------------------------|
| I, E   | k·c, (n−k)·c   | kept and dropped columns                                       |
| X      | k·c × (n−k)·c  | Z_E ≈ Z_I X: (G_II + λI)⁻¹ G_IE, as ``lstsq_from_gram``        |
| Y      | k·c × d        | X W_Eᵀ, solved in whichever order is cheaper (d vs (n−k)·c)     |
| W'     | d × k·c        | W_I + W_E Xᵀ, the new consumer weight                          |
| Δb     | d              | W_E (μ_E − Xᵀ μ_I): the intercept, with the centred Gram        |

``correction=mean`` is FLAP's compensation instead of a fit (X = 0, Δb = W_E μ_E): with ``keep_from`` it puts
FLAP's rule on any method's units, so a table can tell what the units are worth from what the fold is worth.
"""
from __future__ import annotations

import torch

from ...core.linalg import ridge_solve
from ...core.plan import SitePlan
from ...core.units import unit_columns

FITS = ("lstsq", "lstsq_bias")  # the corrections that fit the dropped units from the kept ones (they read the Gram)


def fold(site, G: torch.Tensor, st: dict, keep: list[int], correction: str, ridge: float) -> SitePlan:
    """The site plan for ``keep`` with the LS correction of the dropped units (``correction``: lstsq_bias,
    lstsq, mean, none). ``G`` is the site's uncentred Gram (any float dtype, on the device to compute on; None for
    mean and none, which read no Gram); only its kept rows are taken to float64 and, for lstsq_bias, centred with
    ``st``'s Σz and N (no n × n float64 copy)."""
    sp = SitePlan(keep=keep)
    drop = sorted(set(range(site.n_units)) - set(keep))
    if correction == "none" or not drop:
        return sp
    if G is None and correction in FITS:
        raise ValueError(f"correction={correction} fits the dropped units from the kept ones: it needs the Gram")
    dev = site.consumer_linear.weight.device if G is None else G.device
    I = unit_columns(keep, site.cols_per_unit, dev)
    E = unit_columns(drop, site.cols_per_unit, dev)
    stored = site.consumer_linear.weight.dtype  # the plan holds W' as the model will (bf16: half of fp32)
    W = site.consumer_linear.weight.detach().to(dev, torch.float64)
    WE, mu = W[:, E], st["s1"].to(dev, torch.float64) / max(st["n"], 1)
    if correction == "mean":  # FLAP's bias compensation: the dropped units' mean output, no fit (no Gram rows)
        sp.bias_delta = (WE @ mu[E]).float().cpu()
        return sp
    GI = G.index_select(0, I).to(torch.float64)
    if correction == "lstsq_bias":
        GI.addr_(mu[I], mu, alpha=-st["n"])  # rows I of ZᵀZ − N μμᵀ
    if len(I) == 0:  # nothing kept to fit with
        Y = W.new_zeros(0, W.shape[0])
    elif W.shape[0] < len(E):  # fewer consumer rows than dropped columns: (G_II + λI)⁻¹ (G_IE W_Eᵀ)
        Y = ridge_solve(GI[:, I], GI[:, E] @ WE.T, ridge, overwrite=True)
    else:
        Y = ridge_solve(GI[:, I], GI[:, E], ridge, overwrite=True) @ WE.T  # X first (as ``lstsq_from_gram``)
    sp.weight = (W[:, I] + Y.T).float().to("cpu", stored)  # W_I + W_E Xᵀ, rounded via fp32 as a copy_ would
    if correction == "lstsq_bias":
        sp.bias_delta = (WE @ mu[E] - Y.T @ mu[I]).float().cpu()
    return sp


def fold_to_dense(site, a: dict, keep: list[int], correction: str, ridge: float) -> SitePlan:
    """The dense-target fold: from G' = Z'ᵀZ' (pruned path), C = Z'ᵀZ_d (pruned × dense activations) and
    their sums, W_new = W · C[I]ᵀ (G'_II)⁻¹, so the kept units of the pruned path reproduce the dense
    consumer output (+ intercept: Δb = W μ_d − W_new μ'_I; correction=mean: only Δb = W μ_d − W_I μ'_I)."""
    if correction == "none":
        return SitePlan(keep=keep)
    G, C, n = a["G"], a["C"], max(a["n"], 1)
    I = unit_columns(keep, site.cols_per_unit, G.device)
    W = site.consumer_linear.weight.detach().to(G.device, torch.float64)  # (d, n) dense consumer
    mu_p, mu_d = a["s1"] / n, a["sd"] / n
    if correction == "mean":  # the dense output's mean, no fit
        return SitePlan(keep=keep, bias_delta=(W @ mu_d - W[:, I] @ mu_p[I]).float().cpu())
    if correction == "lstsq_bias":
        G = G - n * torch.outer(mu_p, mu_p)
        C = C - n * torch.outer(mu_p, mu_d)
    X = ridge_solve(G[I][:, I], C[I], ridge) if len(keep) else C[I]
    Wn = W @ X.T  # (d, k·c): maps kept pruned-path activations onto the dense output
    sp = SitePlan(keep=keep, weight=Wn.float().cpu())
    if correction == "lstsq_bias":
        sp.bias_delta = (W @ mu_d - Wn @ mu_p[I]).float().cpu()
    return sp
