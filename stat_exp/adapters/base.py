"""The adapter contract: which Linears produce and which consume each prunable unit of a layer.

A *site* is one prunable group in one layer: ``attn`` (units = heads, or KV groups under GQA)
or ``ffn`` (units = neurons). Removing unit ``u`` deletes ``rows_per_unit`` output rows of every
producer and ``cols_per_unit`` input columns of the consumer; the consumer's input on calibration
tokens is the activation matrix Z of STAT.md §1 (N × n_units·cols_per_unit).

Per-query-head units under GQA (``attn_units=query_head``, ``Adapter.split_groups``): the K/V projections
are ``GatheredLinear``s shared by the query heads of a group (``Site.shared``); a KV head's rows go only
when the last query head that reads it does, so its cost is charged per kept *group* (``Site.groups``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..engine.remote import set_attr


@dataclass
class Site:
    """One prunable site. Linears are held as (parent, attribute) so surgery can replace them."""

    kind: str                                   # "attn" | "ffn"
    producers: list[tuple[nn.Module, str, int | tuple[int, ...]]]  # (parent, attr, rows per unit): see units.producer_rows
    consumer: tuple[nn.Module, str]              # (parent, attr); input columns are per unit
    cols_per_unit: int
    score_rows_per_unit: int = 0                 # query rows per unit (attention score FLOPs)
    gated: bool = False
    shared: list[tuple[nn.Module, str]] = field(default_factory=list)  # GatheredLinears (K, V) read per group

    @property
    def consumer_linear(self) -> nn.Linear:
        return getattr(*self.consumer)

    def producer_linears(self) -> list[nn.Linear]:
        return [getattr(p, a) for p, a, _ in self.producers]

    @property
    def n_units(self) -> int:
        return self.consumer_linear.in_features // self.cols_per_unit

    @property
    def groups(self) -> list[int] | None:
        """The KV head each unit reads (its group), when K/V are shared per group (``shared``); else None."""
        return list(getattr(*self.shared[0]).kv) if self.shared else None


@dataclass
class Adapter:
    """Family-specific knowledge; every function takes modules, never configs of ours."""

    family: str
    model_types: tuple[str, ...]
    layer_paths: tuple[str, ...]                 # dotted paths to the ModuleList of layers
    auto_classes: tuple[str, ...] = ()           # the transformers Auto classes the family's heads load with
    paper_variant: str = "opt"                   # STAT's released allocation: bert (post-LN) | opt (pre-LN)

    def layers(self, model: nn.Module) -> nn.ModuleList:
        for path in self.layer_paths:
            mod = model
            try:
                for part in path.split("."):
                    mod = getattr(mod, part)
            except AttributeError:
                continue
            if isinstance(mod, nn.ModuleList):
                return mod
        raise LookupError(f"{type(model).__name__}: no layer list at any of {self.layer_paths}")

    def sites(self, layer: nn.Module) -> dict[str, Site]:  # pragma: no cover - per family
        raise NotImplementedError

    def residual(self, layer: nn.Module, kind: str) -> tuple[nn.Module, str] | None:
        """Where site ``kind``'s residual input x can be read (a sub-layer computes W z + b + x): (module, "input")
        when x is that module's input (pre-LN: the norm before the producer), (module, "post") when the
        module's input is W z + b + x (post-LN: the norm after the consumer); None when the consumer's output
        is transformed before the residual add (post-sub-layer norms) or the family does not say."""
        return None

    def fixed_flops(self, layer: nn.Module, seqlen: int) -> int:
        """FLOPs per token of the layer's parts that are no site (never pruned; 0 for most families)."""
        return 0

    def split_groups(self, layer: nn.Module) -> None:
        """Make each query head of a grouped-query attention block its own unit (K/V as ``GatheredLinear``s,
        same function). Families without GQA have per-head units already: nothing to do."""

    def resized_attrs(self, layer: nn.Module) -> dict[str, dict]:
        """Attributes the family's forward reads (head counts, widths) that follow the sliced Linears, as
        ``{submodule path within the layer: {attribute: value}}``; saved in the config for reloads."""
        return {}

    def after_resize(self, layer: nn.Module) -> None:
        """Set ``resized_attrs(layer)`` after slicing."""
        for path, attrs in self.resized_attrs(layer).items():
            for key, value in attrs.items():
                set_attr(layer.get_submodule(path), key, value)

    def hidden_size(self, model: nn.Module) -> int:
        c = model.config
        return getattr(c, "hidden_size", None) or getattr(c, "dim")
