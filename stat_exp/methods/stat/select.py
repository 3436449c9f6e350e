"""STAT's per-site factorisation and selection (STAT.md §3): the pivot order of a pivoted QR of the
site's (scaled) activations, from its Gram by pivoted Cholesky, and the error curve e(k)² of keeping the
first k pivots, measured through the consumer. Then the kept units for a given count (query heads under GQA: or
as many as a given plan keeps, within its KV groups).

| symbol | shape       | meaning                                                             |
|--------|-------------|---------------------------------------------------------------------|
| G      | n × n       | the site's Gram (centred for the intercept correction), n = U·c      |
| W      | d × n       | the consumer weight                                                  |
| D      | n           | neurons: ‖W[:, j]‖ (the paper's column scaling)                      |
| Gu     | U × U       | heads: ⟨W_u z_u, W_v z_v⟩ summed over tokens ('output') or ⟨z_u, z_v⟩ ('context') |
| perm   | U           | pivot order of the units                                             |
| err2   | U + 1       | error after keeping the first k pivots (k = 0 … U)                   |
"""
from __future__ import annotations

import torch

from ...core import allocation as alloc
from ...core.linalg import block_trace, lower_product_colnorms, lstsq_from_gram, pivoted_cholesky, unit_output_gram
from ...core.units import unit_columns


def factor(site, G: torch.Tensor, head_space: str, ridge: float, head_quirk: bool = False,
           energy: bool = False) -> dict:
    """{'perm' (U,), 'err2' (U+1,)} of one site from its float64 Gram ``G`` (used as scratch: a neuron site's is
    scaled and factorised in place); neurons also 'rdiag' (U,): |R_jj| of the pivoted QR of Z·D in pivot order.
    ``energy``: also 'energy', ‖Z Wᵀ‖² (a d·n² product: as costly as the pivoting, so only for normalize=layer).
    ``head_quirk``: heads also 'err2_quirk', the released script's levels, whose kept set at level i is
    {h : P[h] < i} (the permutation used where its inverse was meant)."""
    W = site.consumer_linear.weight.detach().to(G.device, torch.float64)  # (d, n)
    out = {"energy": float(((W @ G) * W).sum())} if energy else {}
    if site.kind == "ffn":
        D = W.norm(dim=0)  # paper: scale neurons by their output weight norm
        P, rdiag, err2 = pivoted_cholesky(G.mul_(D[:, None]).mul_(D), overwrite=True, diag_only=True)  # in place
        out["rdiag"] = rdiag.cpu()
    else:
        size = site.cols_per_unit
        P, _, _ = pivoted_cholesky(head_gram(G, W, size, head_space))
        err2 = prefix_errors(G, W, P, size, ridge)
        if head_quirk:
            P_dev = P.to(G.device)
            sets = [((P_dev < i).nonzero().flatten(), (P_dev >= i).nonzero().flatten()) for i in range(len(P) + 1)]
            out["err2_quirk"] = torch.stack([output_error(G, W, k, d, size, ridge) for k, d in sets]).cpu().clamp_min(0)
    return {**out, "perm": P.cpu(), "err2": err2.cpu().clamp_min(0)}


def head_gram(G: torch.Tensor, W: torch.Tensor, size: int, head_space: str) -> torch.Tensor:
    """(U, U) Gram the heads are pivoted on: of their outputs through the consumer ('output') or of their contexts."""
    return block_trace(G, size) if head_space == "context" else unit_output_gram(G, W, size)


def prefix_errors(G, W, P, size: int, ridge: float) -> torch.Tensor:
    """(U+1,) ``output_error`` of keeping the first k units of the order ``P``, k = 0 … U, from one Cholesky.

    With A = G + λI in the order P (columns of unit P[0] first) and A = L Lᵀ, the LS residual Gram of the
    dropped columns E (all from k·size on) is the Schur complement minus the ridge: G_EE − G_EI X = L_EE L_EEᵀ − λI,
    so e(k)² = ‖W_E L_EE‖² − λ‖W_E‖², and W_E L_EE is columns k·size… of M = W_P L (L is lower triangular): e² is
    a suffix sum of M's column norms. λ = ridge · mean(diag G) (``output_error`` scales it by the kept block's own
    diagonal: equal to rounding at the default ridge, tested). Where A is not numerically positive definite, the
    per-k solves of ``output_error``."""
    cols = unit_columns(P.tolist(), size, G.device)
    Gp, Wp = G[cols[:, None], cols], W[:, cols]  # one gather of the permuted Gram
    lam = ridge * float(torch.diagonal(Gp).mean().clamp_min(1e-300))
    Gp.diagonal().add_(lam)
    L, info = torch.linalg.cholesky_ex(Gp)
    if int(info) != 0:
        return torch.stack([output_error(G, W, P[:k], P[k:], size, ridge) for k in range(len(P) + 1)])
    tail = lambda v: v.reshape(len(P), size).sum(1).flip(0).cumsum(0).flip(0)  # noqa: E731 - Σ over units ≥ k
    e2 = tail(lower_product_colnorms(Wp, L)) - lam * tail(Wp.square().sum(0))
    return torch.cat([e2, e2.new_zeros(1)])


def output_error(G, W, keep, drop, size: int, ridge: float) -> torch.Tensor:
    """‖(Z_E − Z_I X) W_Eᵀ‖²_F: the dropped units' LS residual seen through the consumer."""
    if len(drop) == 0:
        return torch.zeros((), dtype=torch.float64, device=G.device)
    I, E = unit_columns(keep.tolist(), size, G.device), unit_columns(drop.tolist(), size, G.device)
    X = lstsq_from_gram(G, I, E, ridge)
    res = G[E][:, E] - G[E][:, I] @ X
    WE = W[:, E]
    return ((WE @ res) * WE).sum()


def selection_order(selection: str, perm: torch.Tensor, dense_site, seed: int, i: int) -> torch.Tensor:
    """The order site ``i`` keeps its units in (keeping k = its first k): the pivots ('qr'), a seeded random
    permutation ('random'), or descending consumer-column norms of the dense model ('magnitude')."""
    n = len(perm)
    if selection == "qr":
        return perm
    if selection == "random":
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + i))
    norm = dense_site.consumer_linear.weight.detach().float().square().sum(0).reshape(n, -1).sum(1)
    return alloc.ranked(norm)


def select(selection: str, perm: torch.Tensor, k: int, dense_site, seed: int, i: int) -> list[int]:
    """Sorted kept units of site ``i``: the first ``k`` of its ``selection_order``."""
    return sorted(selection_order(selection, perm, dense_site, seed, i)[:k].tolist())


def within_groups(site, G, planned: list[int], head_space: str) -> list[int]:
    """len(planned) query heads by the pivoted QR of the heads' Gram (``head_gram``, as ``factor``),
    restricted to the heads of the KV groups that ``planned`` touches."""
    if not planned:
        return []
    touched = {site.groups[u] for u in planned}
    allowed = torch.tensor([u for u in range(site.n_units) if site.groups[u] in touched])
    W = site.consumer_linear.weight.detach().to(G.device, torch.float64)
    P, _, _ = pivoted_cholesky(head_gram(G, W, site.cols_per_unit, head_space)[allowed][:, allowed])
    return sorted(allowed[P[:len(planned)].cpu()].tolist())
