"""Per-site sizes under one global FLOPs budget (pure functions on plain lists/tensors).

Sites are flattened in (layer, kind) order. ``costs[i]`` = FLOPs per token one unit of site i costs,
``budget`` = FLOPs per token that may remain across all sites.
"""
from __future__ import annotations

import torch


def _kept_flops(counts, costs) -> float:
    return sum(k * c for k, c in zip(counts, costs))


def uniform(n_units: list[int], costs: list[float], budget: float) -> list[int]:
    """The same kept fraction ρ in every site (floor), the largest ρ whose FLOPs fit the budget."""
    lo, hi = 0.0, 1.0
    if _kept_flops(n_units, costs) <= budget:
        return list(n_units)
    for _ in range(50):
        mid = (lo + hi) / 2
        if _kept_flops([int(mid * n) for n in n_units], costs) <= budget:
            lo = mid
        else:
            hi = mid
    counts = [int(lo * n) for n in n_units]
    left = budget - _kept_flops(counts, costs)
    # fill: give one more unit to the sites furthest below ρ while the budget allows
    for i in sorted(range(len(counts)), key=lambda i: counts[i] / max(n_units[i], 1)):
        if counts[i] < n_units[i] and costs[i] <= left:
            counts[i] += 1
            left -= costs[i]
    return counts


def by_score(scores: list[torch.Tensor], costs: list[float], budget: float) -> list[list[int]]:
    """Global threshold: drop units in ascending score order until the kept FLOPs fit the budget.
    Returns the sorted kept indices per site."""
    site = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in enumerate(scores)])
    unit = torch.cat([torch.arange(len(s)) for s in scores])
    flat = torch.cat([s.double().reshape(-1) for s in scores])
    cost = torch.tensor(costs, dtype=torch.float64)[site]
    order = torch.argsort(flat, stable=True)
    excess = float(cost.sum()) - budget
    if excess <= 0:
        return [list(range(len(s))) for s in scores]
    removed_cum = torch.cumsum(cost[order], 0)
    n_drop = int(torch.searchsorted(removed_cum, torch.tensor(excess, dtype=torch.float64)).item()) + 1
    dropped = torch.zeros(len(flat), dtype=torch.bool)
    dropped[order[:n_drop]] = True
    return [unit[(site == i) & ~dropped].tolist() for i in range(len(scores))]


def top_k(score: torch.Tensor, k: int) -> list[int]:
    """Indices of the k largest scores, sorted ascending (ties broken by index)."""
    if k <= 0:
        return []
    return sorted(torch.argsort(score.double(), descending=True, stable=True)[:k].tolist())
