"""PrunePlan: kept units per site and the consumer updates that go with them (no torch modules)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError


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


def read_keeps(path: str | Path, site_keys: list[tuple[int, str]], n_units: list[int]) -> tuple[float, list[list[int]]]:
    """(budget, kept units per site) of a saved plan.json, checked against the sites of the model it is for.

    ``site_keys`` are the flattened (layer, kind) sites and ``n_units`` their widths; a plan that names other
    layers or kinds, a unit outside its site, or (where the plan records them) other site widths is refused
    with one line, since its units would mean other heads or neurons here.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"keep_from={path}: no such plan; pass the plan.json of a saved pruned model "
                        "(<run dir>/pruned_<method>_<budget>/plan.json, written with save_model=true)")
    try:
        data = json.loads(p.read_text())
        meta, keep = data["meta"], data["keep"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"keep_from={path} is not a plan.json (a JSON object with 'meta' and 'keep')") from None
    widths = meta.get("n_units")
    if len(keep) != 1 + max(li for li, _ in site_keys) or (widths is not None and list(widths) != list(n_units)):
        raise UserError(f"keep_from={path} was made for another model or unit granularity ({len(keep)} layers, "
                        f"site widths {widths}); use the model and attn_units it was made with")
    keeps = []
    for (li, kind), n in zip(site_keys, n_units):
        units = keep[li].get(kind)
        if units is None or len(set(units)) != len(units) or any(not 0 <= int(u) < n for u in units):
            raise UserError(f"keep_from={path}: layer {li}'s {kind} units {str(units)[:60]} are not distinct units "
                            f"of a site with {n}; use the model and attn_units it was made with")
        keeps.append(sorted(int(u) for u in units))
    return float(meta["budget"]), keeps
