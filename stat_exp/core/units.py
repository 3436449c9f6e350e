"""Units ↔ columns: a site's unit u (a head, KV group or neuron) owns ``per_unit`` consecutive
columns of its consumer's input (and rows of each producer). The one place that maps between the two.

| name       | shape        | meaning                                                      |
|------------|--------------|--------------------------------------------------------------|
| keep       | k            | unit indices                                                 |
| columns    | k·per_unit   | their column indices, unit by unit                           |
| x          | n or n × n   | a per-column vector or a column × column matrix (n = U·per_unit) |
| unit_sum   | U or U × U   | x summed over each unit's columns (every axis)               |
"""
from __future__ import annotations

import torch


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
