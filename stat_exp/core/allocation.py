"""Per-site sizes under one global FLOPs budget (pure functions on plain lists/tensors).

Sites are flattened in (layer, kind) order; ``budget`` = FLOPs per token that may remain across all sites.

| name        | shape    | meaning                                                                     |
|-------------|----------|-----------------------------------------------------------------------------|
| costs[i]    | () or n  | FLOPs per token one unit of site i costs (per unit, when a tensor)          |
| groups[i]   | n | None | the group of each unit (per-query-head attention: its KV head), or None     |
| group_costs | list     | FLOPs per token a group costs while any of its units is kept (shared K/V)   |
| curve       | n + 1    | ``prefix_costs``: FLOPs of keeping the first k units of an order, k = 0…n    |

Group costs make a site's cost depend on *which* units it keeps, so sizes are chosen against each site's own
order (its pivots, scores or random draw): ``uniform`` takes curves, ``by_score`` charges a group when its
last unit goes.
"""
from __future__ import annotations

import torch


def prefix_costs(order, cost: float, groups=None, group_cost: float = 0.0) -> torch.Tensor:
    """(n+1,) float64: cost of keeping the first k units of ``order`` = k·cost + group_cost per distinct
    group among them (groups None: k·cost)."""
    marg = torch.full((len(order),), float(cost), dtype=torch.float64)
    if groups is not None:
        seen: set = set()
        for p, u in enumerate(torch.as_tensor(order).tolist()):
            if groups[u] not in seen:
                seen.add(groups[u])
                marg[p] += group_cost
    return torch.cat([marg.new_zeros(1), torch.cumsum(marg, 0)])


def uniform(curves: list[torch.Tensor], budget: float) -> list[int]:
    """The same kept fraction ρ in every site (floor), the largest ρ whose FLOPs fit the budget; ``curves[i]``
    is site i's ``prefix_costs`` along the order its units would be kept in."""
    n_units = [len(c) - 1 for c in curves]

    def kept(counts):
        return sum(float(c[k]) for c, k in zip(curves, counts))

    if kept(n_units) <= budget:
        return list(n_units)
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if kept([int(mid * n) for n in n_units]) <= budget:
            lo = mid
        else:
            hi = mid
    counts = [int(lo * n) for n in n_units]
    left = budget - kept(counts)
    # fill: give one more unit to the sites furthest below ρ while the budget allows
    for i in sorted(range(len(counts)), key=lambda i: counts[i] / max(n_units[i], 1)):
        k = counts[i]
        if k < n_units[i] and (step := float(curves[i][k + 1] - curves[i][k])) <= left:
            counts[i] += 1
            left -= step
    return counts


def ratio_counts(p: float, n_units: list[int]) -> list[int]:
    """Units kept per site when the lowest-scored int(p·n) of every site's n are pruned (the released
    structured rounding of Wanda-sp and magnitude-sp)."""
    return [n - int(p * n) for n in n_units]


def shared_ratio(curves: list[torch.Tensor], budget: float, iters: int = 64) -> tuple[float, list[int]]:
    """One pruning ratio p for every site: the smallest p whose ``ratio_counts`` fit the budget along each
    site's order (``curves[i]`` is site i's ``prefix_costs``), found by bisection; kept FLOPs are a step
    function of p, so this is as close below the budget as the rounding allows. Returns (p, counts)."""
    n_units = [len(c) - 1 for c in curves]

    def kept(p):
        return sum(float(c[k]) for c, k in zip(curves, ratio_counts(p, n_units)))

    if kept(0.0) <= budget:
        return 0.0, list(n_units)
    lo, hi = 0.0, 1.0  # kept(lo) > budget >= kept(hi) = 0
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if kept(mid) <= budget else (mid, hi)
    return hi, ratio_counts(hi, n_units)


def next_ratio(p: float, n_units: list[int]) -> float:
    """The smallest ratio above ``p`` that prunes one more unit in some site."""
    nxt = min((int(p * n) + 1) / n for n in n_units if int(p * n) < n)
    while any(int(nxt * n) <= int(p * n) for n in n_units if (int(p * n) + 1) / n <= nxt):
        nxt = float(torch.nextafter(torch.tensor(nxt, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)))
    return nxt


def by_score(scores: list[torch.Tensor], costs: list, budget: float, groups: list | None = None,
             group_costs: list | None = None) -> list[list[int]]:
    """Global threshold: drop units in ascending score order until the kept FLOPs fit the budget; a group's
    cost goes with the last of its units to be dropped. Returns the sorted kept indices per site."""
    site = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in enumerate(scores)])
    unit = torch.cat([torch.arange(len(s)) for s in scores])
    flat = torch.cat([s.double().reshape(-1) for s in scores])
    cost = torch.cat([torch.as_tensor(c, dtype=torch.float64).expand(len(s)) for c, s in zip(costs, scores)])
    order = torch.argsort(flat, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    offset = 0
    for i, s in enumerate(scores):  # each group's cost goes with its unit that is dropped last
        g = groups[i] if groups else None
        for j in set(g or ()):
            members = offset + torch.tensor([u for u, gu in enumerate(g) if gu == j], dtype=torch.long)
            cost[members[rank[members].argmax()]] += group_costs[i]
        offset += len(s)
    excess = float(cost.sum()) - budget
    if excess <= 0:
        return [list(range(len(s))) for s in scores]
    removed_cum = torch.cumsum(cost[order], 0)
    n_drop = int(torch.searchsorted(removed_cum, torch.tensor(excess, dtype=torch.float64)).item()) + 1
    dropped = torch.zeros(len(flat), dtype=torch.bool)
    dropped[order[:n_drop]] = True
    return [unit[(site == i) & ~dropped].tolist() for i in range(len(scores))]


def ranked(score: torch.Tensor) -> torch.Tensor:
    """Unit indices by descending score (ties broken by index): the order ``top_k`` keeps them in."""
    return torch.argsort(score.double(), descending=True, stable=True)


def top_k(score: torch.Tensor, k: int) -> list[int]:
    """Indices of the k largest scores, sorted ascending (ties broken by index)."""
    if k <= 0:
        return []
    return sorted(ranked(score)[:k].tolist())
