"""The Method protocol and the context every method gets (no Hydra config inside).

A method declares what it needs as class attributes, so the pipeline never branches on its name:
``needs_labels`` (labelled task batches: gradient methods), ``uses_sketch`` (takes the ``sketch`` group's
``sketch``/``sketch_dim`` options), ``needs_stats``/``gram`` (per-site activation statistics from one walk).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..adapters.base import Adapter
from ..core.allocation import prefix_costs
from ..core.cost import CostModel
from ..core.plan import PrunePlan, SitePlan
from ..engine.capture import Captured, SiteStats, walk
from ..engine.surgery import apply_plan
from ..errors import UserError


@dataclass
class Context:
    """What a method may use: the dense model, its adapter, and the cost model the budget is in."""

    model: nn.Module
    adapter: Adapter
    cost: CostModel
    device: str = "cpu"
    seed: int = 0
    site_keys: list[tuple[int, str]] = field(default_factory=list)  # flattened (layer, kind)
    costs: list[int] = field(default_factory=list)                   # cost per unit, per site
    n_units: list[int] = field(default_factory=list)
    groups: list[list[int] | None] = field(default_factory=list)     # per site: each unit's KV group, or None
    group_costs: list[int] = field(default_factory=list)             # per site: cost per kept group
    dense_cost: int = 0                                              # the dense layers' total cost
    cache_dir: str | None = None                                     # where methods may cache statistics
    cache_key: dict | None = None                                    # what the statistics depend on
    cache_max_bytes: int | None = None                               # the cache's size bound (LRU eviction)
    labelled: list[dict] | None = None                               # full-model batches with labels (kwon)
    unseen: list[dict] | None = None                                 # labelled batches disjoint from calibration

    def __post_init__(self):
        for li, layer in enumerate(self.adapter.layers(self.model)):
            for kind, site in self.adapter.sites(layer).items():
                self.site_keys.append((li, kind))
                self.costs.append(self.cost.unit(site))
                self.n_units.append(site.n_units)
                self.groups.append(site.groups)
                self.group_costs.append(self.cost.group(site))
        self.dense_cost = self.cost.total(self.adapter, self.model)

    def site(self, i: int):
        li, kind = self.site_keys[i]
        return self.adapter.sites(self.adapter.layers(self.model)[li])[kind]

    @property
    def fixed_cost(self) -> int:
        """The part of ``dense_cost`` no unit carries (layer parts the family cannot prune)."""
        return self.dense_cost - sum(float(self.curve(i)[-1]) for i in range(len(self.site_keys)))

    @property
    def grouped(self) -> bool:
        """Whether some site charges shared K/V per kept group (per-query-head units under GQA)."""
        return any(g is not None for g in self.groups)

    def curve(self, i: int, order=None):
        """Site ``i``'s cost of keeping the first k units of ``order`` (default: index order), k = 0…n."""
        order = range(self.n_units[i]) if order is None else order
        return prefix_costs(list(order), self.costs[i], self.groups[i], self.group_costs[i])

    def curves(self, orders: list) -> list:
        return [self.curve(i, o) for i, o in enumerate(orders)]

    def refuse_groups(self, what: str, why: str = "prices attention units additively") -> None:
        """One line for a method that cannot charge shared K/V per kept group (per-query-head units)."""
        if self.grouped:
            raise UserError(f"{what} {why}, so it cannot charge shared K/V per kept group under "
                            "attn_units=query_head; use attn_units=kv_group")

    def budget(self, fraction: float) -> float:
        """The absolute cost the units may keep at a budget fraction (the fixed part is always kept)."""
        left = fraction * self.dense_cost - self.fixed_cost
        if left < 0:
            raise UserError(f"budget {fraction:g} is below the part of the layers this family cannot prune "
                            f"({self.fixed_cost / self.dense_cost:.3f} of them); use a budget of at least "
                            f"{self.fixed_cost / self.dense_cost:.3f}")
        return left

    def layered(self, per_site: list) -> list[dict]:
        """A flat per-site list as [{kind: value}] per layer."""
        layers: list[dict] = [{} for _ in range(1 + max(li for li, _ in self.site_keys))]
        for (li, kind), v in zip(self.site_keys, per_site):
            layers[li][kind] = v
        return layers


class Method:
    """calibrate once on the dense model; then ``prune(model_copy, budget)`` per budget."""

    name = "base"
    needs_stats = True
    needs_labels = False
    uses_sketch = False
    gram = False

    def __init__(self, **options):
        self.options = options

    @classmethod
    def wants_labels(cls, options: dict) -> bool:
        """Whether the method with ``options`` needs labelled batches (``ctx.labelled``)."""
        return cls.needs_labels

    @classmethod
    def wants_unseen(cls, options: dict, calib_batches: int) -> int:
        """How many labelled batches besides the calibration ones the method reads (``Context.unseen``)."""
        return 0

    def calibrate(self, ctx: Context, cap: Captured) -> None:
        """Per-site statistics of the dense model (``needs_stats``). Without a Gram they are one walk per model
        and captured inputs, kept with ``cap``: the baselines of a run share it (read-only)."""
        self.ctx, self.stats = ctx, None
        if not self.needs_stats:
            return
        if self.gram or id(ctx.model) not in cap.site_stats:
            stats = walk(ctx.model, ctx.adapter, cap, ctx.device, lambda kind: SiteStats(gram=self.gram),
                         desc=f"{self.name}: calibrate")[0]
            if self.gram:
                self.stats = stats
                return
            cap.site_stats[id(ctx.model)] = (ctx.model, stats)  # the model held: its id stays its own
        self.stats = cap.site_stats[id(ctx.model)][1]

    def plan(self, budget: float) -> PrunePlan:  # pragma: no cover - per method
        raise NotImplementedError

    def prune(self, model: nn.Module, budget: float) -> PrunePlan:
        """Prune ``model`` (a copy of the dense model) in place to ``budget``; return the plan."""
        plan = self.plan(budget)
        apply_plan(model, plan, adapter=self.ctx.adapter)
        return plan

    def row_info(self) -> dict:
        """Fields this method adds to every row it produces (what it chose beyond the budget)."""
        return {}

    def stat(self, i: int) -> SiteStats:
        li, kind = self.ctx.site_keys[i]
        return self.stats[li][kind]

    def new_plan(self, keeps: list[list[int]], **meta) -> PrunePlan:
        return PrunePlan(self.ctx.layered([SitePlan(keep=k) for k in keeps]), meta={"method": self.name, **meta})
