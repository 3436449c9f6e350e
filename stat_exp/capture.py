"""Layer-by-layer calibration engine (the SparseGPT/SliceGPT loop, family-agnostic).

1. ``capture_inputs``: run the model on each calibration batch until layer 0, record its hidden
   states and every other arg/kwarg (masks, rotary embeddings, position ids) — those are the same
   for every layer, so no per-model code is needed.
2. ``walk``: for each layer, move it (alone) to the device, run it on every batch with forward
   pre-hooks on each site's consumer feeding an accumulator with the consumer's input Z (padding
   tokens dropped), let a callback prune the layer, and feed its outputs (re-run if the callback
   changed the layer) to the next layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .adapters.base import Adapter


class _Stop(Exception):
    pass


@dataclass
class Captured:
    """Per calibration batch: hidden states (B, T, d), the other args/kwargs, and a token mask (B, T)."""

    hidden: list[torch.Tensor]
    args: list[tuple]
    kwargs: list[dict]
    token_mask: list[torch.Tensor | None] = field(default_factory=list)


def _to(x, device):
    if torch.is_tensor(x):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    return x


def move_outside_layers(model: nn.Module, layers: nn.ModuleList, device) -> None:
    """Move everything but the layers (embeddings, rotary tables, final norm, heads) to ``device``;
    the layers stay where they are, so a large model never lands on the accelerator whole."""
    inside = {id(m) for m in layers.modules()}
    for m in model.modules():
        if id(m) in inside:
            continue
        for p in m.parameters(recurse=False):
            p.data = p.data.to(device)
        for name, b in list(m.named_buffers(recurse=False)):
            m._buffers[name] = b.to(device)


@torch.no_grad()
def capture_inputs(model: nn.Module, adapter: Adapter, batches: list[dict], device="cpu",
                   store_device="cpu") -> Captured:
    """Inputs of layer 0 for each batch (dicts of input_ids / attention_mask ...)."""
    layers = adapter.layers(model)
    cap = Captured([], [], [], [])

    def hook(_mod, args, kwargs):
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        cap.hidden.append(hidden.to(store_device))
        cap.args.append(_to(tuple(args[1:]), store_device))
        kwargs.pop("past_key_values", None)
        kwargs.pop("past_key_value", None)
        cap.kwargs.append(_to(kwargs, store_device))
        raise _Stop

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        move_outside_layers(model, layers, device)
        for b in batches:
            mask = b.get("attention_mask")
            cap.token_mask.append(None if mask is None else mask.bool().to(store_device))
            kw = {"use_cache": False} if getattr(model.config, "use_cache", None) is not None else {}
            try:
                model(**_to(b, device), **kw)
            except _Stop:
                pass
    finally:
        handle.remove()
    return cap


class SiteStats:
    """Streaming statistics of a consumer input Z (N × n): count, Σz, Σz², optionally ZᵀZ (float64)."""

    def __init__(self, gram: bool = False, gram_dtype=torch.float64):
        self.gram, self.gram_dtype = gram, gram_dtype
        self.n, self.s1, self.s2, self.G = 0, None, None, None

    def add(self, z: torch.Tensor) -> None:  # z: (N_b, n)
        zf = z.float()
        s1, s2 = zf.sum(0).double(), zf.square().sum(0).double()
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += z.shape[0]
        if self.gram:
            g = (zf.T @ zf).to(self.gram_dtype)  # (n, n), per-batch product in fp32, summed in float64
            self.G = g if self.G is None else self.G + g

    @property
    def mean(self) -> torch.Tensor:
        return self.s1 / self.n

    @property
    def var(self) -> torch.Tensor:
        return (self.s2 / self.n - self.mean.square()).clamp_min(0)

    def cpu(self) -> "SiteStats":
        for k in ("s1", "s2", "G"):
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, v.cpu())
        return self


def _run_layer(layer, cap: Captured, i: int, device):
    out = layer(cap.hidden[i].to(device), *_to(cap.args[i], device), **_to(cap.kwargs[i], device))
    return out[0] if isinstance(out, (tuple, list)) else out


LayerCallback = Callable[[int, nn.Module, dict], bool]


@torch.no_grad()
def walk(model: nn.Module, adapter: Adapter, cap: Captured, device="cpu",
         make_stats: Callable[[str], object] | None = None, on_layer: LayerCallback | None = None,
         desc: str = "layers") -> list[dict]:
    """Run the layers in order on the captured inputs (updated in place to each layer's outputs).

    ``make_stats(kind)`` builds an accumulator with ``.add(Z)`` per site (None: no hooks);
    ``on_layer(l, layer, stats)`` may prune the layer and returns True if it did.
    Returns the per-layer stats dicts (moved to CPU when they have ``.cpu()``).
    """
    layers, all_stats = adapter.layers(model), []
    for li, layer in enumerate(tqdm(layers, desc=desc, leave=False)):
        home = next(layer.parameters()).device
        layer.to(device)
        stats, handles, cur = {}, [], {"batch": 0}
        if make_stats is not None:
            for kind, site in adapter.sites(layer).items():
                stats[kind] = make_stats(kind)
                handles.append(site.consumer_linear.register_forward_pre_hook(
                    _feeder(stats[kind], cap, cur)))
        outs = []
        try:
            for i in range(len(cap.hidden)):
                cur["batch"] = i
                outs.append(_run_layer(layer, cap, i, device))
        finally:
            for h in handles:
                h.remove()
        if on_layer is not None and on_layer(li, layer, stats):
            outs = [_run_layer(layer, cap, i, device) for i in range(len(cap.hidden))]
        cap.hidden = [o.to(cap.hidden[0].device) for o in outs]
        layer.to(home)
        all_stats.append({k: (v.cpu() if hasattr(v, "cpu") else v) for k, v in stats.items()})
    return all_stats


def _feeder(acc, cap: Captured, cur: dict):
    """Forward pre-hook: hand the consumer's input, minus padding tokens, to ``acc``."""
    def hook(_mod, args):
        acc.add(real_tokens(args[0], cap, cur["batch"]))
    return hook


def real_tokens(z: torch.Tensor, cap: Captured, batch: int) -> torch.Tensor:
    """(N_b, n) rows of ``z`` for the batch's real tokens. ``z`` is (B, T, n), or (B·T, n) where the family
    flattens tokens (OPT's FFN); padding tokens (token mask False) are dropped."""
    mask = cap.token_mask[batch] if cap.token_mask else None
    if mask is not None:
        mask = mask.to(z.device)
        z = z[mask] if z.dim() == 3 else z[mask.reshape(-1)]
    return z.reshape(-1, z.shape[-1])
