"""Units ↔ columns: a site's unit u (a head, KV group or neuron) owns ``per_unit`` consecutive
columns of its consumer's input (and rows of each producer). The one place that maps between the two.

| name       | shape        | meaning                                                      |
|------------|--------------|--------------------------------------------------------------|
| keep       | k            | unit indices                                                 |
| columns    | k·per_unit   | their column indices, unit by unit                           |
| x          | n or n × n   | a per-column vector or a column × column matrix (n = U·per_unit) |
| unit_sum   | U or U × U   | x summed over each unit's columns (every axis)               |
| rows       | int or tuple | a producer's rows per unit: one block of U·rows, or a fused  |
|            |              | output of blocks U·r₁, U·r₂, … (Phi-3's qkv: (g·d, d, d))    |
"""
from __future__ import annotations

import torch

ATTN_UNITS = ("kv_group", "query_head")  # what an attention unit is under GQA (``surgery.attention_units``)


def unit_columns(keep, per_unit: int, device=None) -> torch.Tensor:
    """Column indices (k·per_unit,) of the units ``keep`` (any order is kept), each a contiguous block."""
    k = torch.as_tensor(keep, dtype=torch.long, device=device).reshape(-1, 1)
    return (k * per_unit + torch.arange(per_unit, device=device)).reshape(-1)


def unit_sum(x: torch.Tensor, per_unit: int) -> torch.Tensor:
    """Sum a per-column vector (n,) into (U,), or a column matrix (n, n) into its (U, U) block sums."""
    U = x.shape[0] // per_unit
    if x.dim() == 1:
        return x.reshape(U, per_unit).sum(1)
    return x.reshape(U, per_unit, U, per_unit).sum((1, 3))


def producer_rows(keep, rows: int | tuple[int, ...], n_units: int, device=None) -> torch.Tensor:
    """Output-row indices of a producer for the units ``keep``: ``unit_columns`` for one block; for a fused
    output (``rows`` a tuple), unit u owns r consecutive rows in each block, block j starting at Σ U·r_<j."""
    if isinstance(rows, int):
        return unit_columns(keep, rows, device)
    out, offset = [], 0
    for r in rows:
        out.append(offset + unit_columns(keep, r, device))
        offset += n_units * r
    return torch.cat(out)


def rows_per_unit(rows: int | tuple[int, ...]) -> int:
    """How many of a producer's output rows one unit owns."""
    return rows if isinstance(rows, int) else sum(rows)


def unit_row_sum(v: torch.Tensor, rows: int | tuple[int, ...]) -> torch.Tensor:
    """A per-row vector of a producer summed into (U,) per unit (over every block of a fused output)."""
    if isinstance(rows, int):
        return unit_sum(v, rows)
    U = v.shape[0] // sum(rows)
    return sum(unit_sum(block, r) for block, r in zip(v.split([U * r for r in rows]), rows))
