"""Apply a PrunePlan to a model: physically slice the Linears (or mask them, for tests). Slicing ends
with ``saving.finalize`` so the pruned model saves and reloads despite per-layer widths."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..adapters import get_adapter
from ..adapters.base import Adapter, Site
from ..core.plan import PrunePlan, SitePlan
from ..core.units import ATTN_UNITS, producer_rows, unit_columns
from .remote import GatheredLinear


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s modules and config that shares its parameter and buffer tensors: surgery replaces
    the sliced Linears of the copy with new ones, so a pruned model costs only its own kept weights (peak host
    memory of a curve ≈ dense + one pruned model). Nothing may modify the copy's tensors in place."""
    memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


def slice_linear(lin: nn.Linear, idx: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping ``idx`` along ``dim`` (0 = output rows, 1 = input columns); same device/dtype."""
    w = lin.weight.index_select(dim, idx.to(lin.weight.device))
    new = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None, device="meta")
    new.weight = nn.Parameter(w.detach().clone(), requires_grad=lin.weight.requires_grad)
    if lin.bias is not None:
        b = lin.bias.index_select(0, idx.to(lin.bias.device)) if dim == 0 else lin.bias
        new.bias = nn.Parameter(b.detach().clone(), requires_grad=lin.bias.requires_grad)
    return new


def ensure_bias(lin: nn.Linear) -> None:
    if lin.bias is None:
        lin.bias = nn.Parameter(torch.zeros(lin.out_features, dtype=lin.weight.dtype,
                                            device=lin.weight.device), requires_grad=False)


def apply_site(site: Site, sp: SitePlan) -> None:
    """Slice one site in place: producers' rows, the consumer's columns, then the folded update."""
    n = site.n_units
    for parent, attr, rows in site.producers:
        setattr(parent, attr, slice_linear(getattr(parent, attr), producer_rows(sp.keep, rows, n), 0))
    for parent, attr in site.shared:
        setattr(parent, attr, gather_heads(getattr(parent, attr), sp.keep))
    parent, attr = site.consumer
    new = slice_linear(getattr(parent, attr), unit_columns(sp.keep, site.cols_per_unit), 1)
    _update_consumer(new, sp.weight, sp.bias_delta)
    setattr(parent, attr, new)


def gather_heads(lin: GatheredLinear, keep: list[int]) -> GatheredLinear:
    """The shared K/V projection for the kept query heads ``keep``: the KV heads they read, each once (in
    their old order), and the map renumbered onto them."""
    kv = [lin.kv[h] for h in keep]
    used = sorted(set(kv))
    rows = slice_linear(lin, unit_columns(used, lin.head_dim), 0)
    new = GatheredLinear(lin.in_features, [used.index(j) for j in kv], lin.head_dim, lin.bias is not None,
                         device="meta")
    new.weight, new.bias = rows.weight, rows.bias
    return new


def _update_consumer(lin: nn.Linear, weight, bias_delta) -> None:
    with torch.no_grad():
        if weight is not None:
            lin.weight.copy_(weight.to(lin.weight))
        if bias_delta is not None:
            ensure_bias(lin)
            lin.bias.add_(bias_delta.to(lin.bias))


def mask_site(site: Site, sp: SitePlan) -> None:
    """Shape-preserving equivalent of apply_site: zero the dropped consumer columns, write the update."""
    lin = site.consumer_linear
    cols = unit_columns(sp.keep, site.cols_per_unit, device=lin.weight.device)
    with torch.no_grad():
        full = torch.zeros_like(lin.weight)
        full[:, cols] = lin.weight[:, cols] if sp.weight is None else sp.weight.to(lin.weight)
        lin.weight.copy_(full)
    _update_consumer(lin, None, sp.bias_delta)


def attention_units(model: nn.Module, units: str, adapter: Adapter | None = None) -> nn.Module:
    """Set what an attention unit is, in place and without changing the model's function: ``kv_group`` (as
    loaded: a KV head with its query heads) or ``query_head`` (``Adapter.split_groups`` on every layer)."""
    from ..errors import UserError

    if units not in ATTN_UNITS:
        raise UserError(f"attn_units={units!r}; choose one of {', '.join(ATTN_UNITS)}")
    if units == "query_head":
        adapter = adapter or get_adapter(model)
        for layer in adapter.layers(model):
            adapter.split_groups(layer)
    return model


def apply_plan(model: nn.Module, plan: PrunePlan, mode: str = "slice", adapter: Adapter | None = None):
    """Apply ``plan`` to ``model`` in place (mode 'slice' or 'mask'); returns the model."""
    adapter = adapter or get_adapter(model)
    layers = adapter.layers(model)
    assert len(layers) == len(plan.layers), "plan and model have different layer counts"
    for layer, lp in zip(layers, plan.layers):
        sites = adapter.sites(layer)
        for kind, sp in lp.items():
            (apply_site if mode == "slice" else mask_site)(sites[kind], sp)
        adapter.after_resize(layer)
    if mode == "slice":
        from .saving import finalize

        finalize(model, adapter)
    return model
