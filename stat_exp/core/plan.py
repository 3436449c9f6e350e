"""PrunePlan: kept units per site and the consumer updates that go with them (no torch modules)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SitePlan:
    """keep: sorted kept unit indices. weight: new consumer weight (d_out × k·cols_per_unit),
    replacing the sliced one (the folded correction); bias_delta: added to the consumer bias."""

    keep: list[int]
    weight: torch.Tensor | None = None
    bias_delta: torch.Tensor | None = None


@dataclass
class PrunePlan:
    layers: list[dict[str, SitePlan]]
    meta: dict = field(default_factory=dict)

    def sizes(self) -> list[dict[str, int]]:
        return [{k: len(sp.keep) for k, sp in lp.items()} for lp in self.layers]

    def to_json(self) -> dict:
        return {"meta": self.meta, "keep": [{k: sp.keep for k, sp in lp.items()} for lp in self.layers]}
