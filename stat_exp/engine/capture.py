"""Layer-by-layer calibration engine (the SparseGPT/SliceGPT loop, family-agnostic).

1. ``capture_inputs``: run the model on each calibration batch until layer 0, record its hidden
   states and every other arg/kwarg (masks, rotary embeddings, position ids). Where the config's
   ``layer_types`` mix kinds (sliding and full attention, local and global rotary: Gemma 2/3, Qwen2 with
   sliding layers), a second, cheap pass runs every layer as the identity and records what each layer is
   called with; layers whose arguments differ from layer 0's keep their own (shared tensors stored once).
2. ``walk``: the one layer loop. For each layer: move it (alone) to the device, run it on every batch
   of one or more *streams* (e.g. the dense and the pruned model's inputs), with forward pre-hooks on
   each site's consumer feeding an accumulator with the consumer's input Z (padding tokens dropped), let
   a ``visit`` callback read or prune the layer, move it back, and hand each stream's outputs to the next
   layer. ``walk`` returns new hidden states; the captured inputs it was given are never modified.
3. ``hooks()``: a context manager that removes every hook registered in it, also when a layer raises.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import torch
from torch import nn
from ..progress import progress

from ..adapters.base import Adapter
from ..errors import UserError
from .placement import borrowed, borrowed_outside, compute_dtype, storage_dtype


class _Stop(Exception):
    pass


@dataclass
class Captured:
    """Per calibration batch: hidden states (B, T, d), the other args/kwargs, and a token mask (B, T)."""

    hidden: list[torch.Tensor]
    args: list[tuple]
    kwargs: list[dict]
    token_mask: list[torch.Tensor | None] = field(default_factory=list)
    own: dict[int, list[tuple[tuple, dict]]] = field(default_factory=dict)  # layer -> per batch (args, kwargs)
    site_stats: dict = field(default_factory=dict, repr=False)  # id(model) -> (model, its walk's SiteStats)

    def inputs(self, layer: int, i: int) -> tuple[tuple, dict]:
        """(args, kwargs) that layer ``layer`` is called with on batch ``i``."""
        return self.own[layer][i] if layer in self.own else (self.args[i], self.kwargs[i])

    def with_hidden(self, hidden: list[torch.Tensor]) -> "Captured":
        """The same batches (args, kwargs, masks shared) with other hidden states."""
        return replace(self, hidden=list(hidden), site_stats={})


def _to(x, device, memo: dict | None = None, dtype: torch.dtype | None = None):
    """``x`` (tensors in nested tuples/lists/dicts) on ``device``, floating-point ones in ``dtype`` when given;
    with ``memo``, a tensor met twice moves once."""
    if torch.is_tensor(x):
        def to(t):
            return t.to(device, dtype if t.is_floating_point() else None)
        if memo is None:
            return to(x)
        if id(x) not in memo:
            memo[id(x)] = (x, to(x))  # keep x alive so its id stays unique
        return memo[id(x)][1]
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device, memo, dtype) for v in x)
    if isinstance(x, dict):
        return {k: _to(v, device, memo, dtype) for k, v in x.items()}
    return x


def _same(a, b) -> bool:
    """The same objects (tensors by identity) in the same nesting."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return a is b
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a is b or a == b


def _split(args, kwargs) -> tuple[torch.Tensor, tuple, dict]:
    """A layer call's (hidden states, other args, kwargs without caches)."""
    kwargs = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "past_key_value")}
    hidden = args[0] if args else kwargs.pop("hidden_states")
    return hidden, tuple(args[1:]), kwargs


def mixed_layers(config) -> bool:
    """Whether the config's ``layer_types`` give layers different masks or rotary tables."""
    return len(set(getattr(config, "layer_types", None) or [])) > 1


@torch.no_grad()
def capture_inputs(model: nn.Module, adapter: Adapter, batches: list[dict], device="cpu",
                   store_device="cpu") -> Captured:
    """Inputs of layer 0 for each batch (dicts of input_ids / attention_mask ...), and of every other layer
    whose arguments differ from layer 0's (``mixed_layers``); the parts before the layers run on ``device``
    in the compute dtype (``placement``), the layers not at all."""
    layers = adapter.layers(model)
    dtype = compute_dtype(storage_dtype(model), device)
    cap = Captured([], [], [], [])
    kw = {"use_cache": False} if getattr(model.config, "use_cache", None) is not None else {}

    def hook(_mod, args, kwargs):
        hidden, rest, kwargs = _split(args, kwargs)
        cap.hidden.append(hidden.to(store_device))
        cap.args.append(_to(rest, store_device))
        cap.kwargs.append(_to(kwargs, store_device))
        raise _Stop

    with hooks() as hs, borrowed_outside(model, layers, device, dtype):
        hs.append(layers[0].register_forward_pre_hook(hook, with_kwargs=True))
        for b in batches:
            mask = b.get("attention_mask")
            cap.token_mask.append(None if mask is None else mask.bool().to(store_device))
            try:
                model(**_to(b, device), **kw)
            except _Stop:
                pass
        hs.pop().remove()
        if mixed_layers(model.config) and len(layers) > 1:
            cap.own = _per_layer_inputs(model, layers, batches, cap, device, store_device, kw, dtype)
    return cap


def _per_layer_inputs(model, layers, batches, cap: Captured, device, store_device, kw, dtype) -> dict:
    """Every layer's (args, kwargs) per batch, from a pass where each layer is the identity (layer 0 runs
    once, on the first batch, for its output's structure); only layers whose arguments differ from layer
    0's are kept, as {layer: [(args, kwargs) per batch]}."""
    with borrowed(layers[0], device, dtype) as layer0:
        out0 = layer0(cap.hidden[0].to(device), *_to(cap.args[0], device), **_to(cap.kwargs[0], device))
    calls: list[list] = [[] for _ in layers]

    def identity(li):
        def forward(*args, **kwargs):
            hidden, rest, kwargs = _split(args, kwargs)
            calls[li].append((rest, kwargs))
            if li == len(layers) - 1:
                raise _Stop
            return (hidden, *out0[1:]) if isinstance(out0, tuple) else hidden
        return forward

    for li, layer in enumerate(layers):
        layer.forward = identity(li)
    try:
        for b in batches:
            try:
                model(**_to(b, device), **kw)
            except _Stop:
                pass
    finally:
        for layer in layers:
            del layer.forward
    memo: dict = {}
    return {li: [(_to(a, store_device, memo), _to(k, store_device, memo)) for a, k in per_batch]
            for li, per_batch in enumerate(calls)
            if li > 0 and not all(_same(c, c0) for c, c0 in zip(per_batch, calls[0]))}


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


@contextmanager
def hooks() -> Iterator[list]:
    """``with hooks() as hs: hs.append(module.register_forward_pre_hook(...))``: all removed on exit."""
    handles: list = []
    try:
        yield handles
    finally:
        for h in handles:
            h.remove()


class LayerRun:
    """One layer on the device and the streams flowing through it. ``run(name, i)`` runs batch ``i`` of
    stream ``name`` and records the output as that stream's next input; ``forget(name)`` drops recorded
    outputs (the layer changed), so ``outputs()`` re-runs them. ``current`` is the (stream, batch) running."""

    def __init__(self, layer: nn.Module, streams: dict[str, Captured], device, index: int = 0, dtype=None):
        self.layer, self.streams, self.device, self.index, self.dtype = layer, streams, device, index, dtype
        self.out = {name: [None] * len(c.hidden) for name, c in streams.items()}
        self.current: tuple[str, int] = ("", 0)

    def __call__(self, name: str, i: int, layer: nn.Module | None = None, record: bool = True) -> torch.Tensor:
        """Batch ``i`` of stream ``name`` through this layer, or through ``layer`` (a variant of it, e.g. a
        pruned copy, with the same inputs); ``record``: its output becomes the stream's next input."""
        cap = self.streams[name]
        self.current = (name, i)
        args, kwargs = cap.inputs(self.index, i)
        dev, dt = self.device, self.dtype
        out = (layer or self.layer)(cap.hidden[i].to(dev, dt), *_to(args, dev, dtype=dt), **_to(kwargs, dev, dtype=dt))
        out = out[0] if isinstance(out, (tuple, list)) else out
        if record:
            self.out[name][i] = out.to(cap.hidden[i].device)
        return out

    def all(self, name: str) -> None:
        for i in range(len(self.streams[name].hidden)):
            self(name, i)

    def forget(self, name: str) -> None:
        self.out[name] = [None] * len(self.out[name])

    def tokens(self, z: torch.Tensor) -> torch.Tensor:
        """Rows of ``z`` for the real tokens of the batch now running (see ``real_tokens``)."""
        name, i = self.current
        return real_tokens(z, self.streams[name], i)

    def lengths(self) -> list[int]:
        """Real tokens per sequence of the batch now running (the rows of ``tokens`` come sequence by sequence)."""
        name, i = self.current
        cap = self.streams[name]
        mask = cap.token_mask[i] if cap.token_mask else None
        if mask is not None:
            return mask.sum(1).tolist()
        B, T = cap.hidden[i].shape[:2]
        return [T] * B

    def outputs(self) -> dict[str, Captured]:
        for name, outs in self.out.items():
            for i, o in enumerate(outs):
                if o is None:
                    self(name, i)
        return {name: c.with_hidden(self.out[name]) for name, c in self.streams.items()}


Visit = Callable[[int, nn.Module, dict, LayerRun], None]


@torch.no_grad()
def walk(model: nn.Module, adapter: Adapter, cap: Captured | dict[str, Captured], device="cpu",
         make_stats: Callable[[str], object] | None = None, visit: Visit | None = None,
         desc: str = "layers") -> tuple[list[dict], Captured | dict[str, Captured]]:
    """Run the layers in order on one stream (``cap``) or several (a dict of named streams).

    ``make_stats(kind)`` builds an accumulator with ``.add(Z)`` per site, fed from the first stream;
    ``visit(l, layer, stats, run)`` may run streams itself (``run(name, i)``), prune the layer, and must
    then ``run.forget`` the streams whose recorded outputs the change made stale.
    Returns (per-layer stats, moved to the host when they have ``.cpu()``; the final stream(s)).
    """
    streams = dict(cap) if isinstance(cap, dict) else {"main": cap}
    first = next(iter(streams))
    all_stats = []
    for li, layer in enumerate(progress(adapter.layers(model), desc, "layer")):
        dtype = compute_dtype(storage_dtype(layer), device)
        with borrowed(layer, device, dtype):  # bf16 storage computes in fp32 on a CPU (``placement``)
            run, stats = LayerRun(layer, streams, device, li, dtype), {}
            if make_stats is not None:
                with hooks() as hs:
                    for kind, site in adapter.sites(layer).items():
                        stats[kind] = make_stats(kind)
                        hs.append(site.consumer_linear.register_forward_pre_hook(_feeder(stats[kind], run, kind)))
                    run.all(first)
            if visit is not None:
                visit(li, layer, stats, run)
            streams = run.outputs()
        all_stats.append({k: (v.cpu() if hasattr(v, "cpu") else v) for k, v in stats.items()})
    return all_stats, (streams if isinstance(cap, dict) else streams["main"])


def _feeder(acc, run: LayerRun, kind: str = "site"):
    """Forward pre-hook: the consumer's input, minus padding, to ``acc`` (with per-sequence lengths when the
    accumulator works sequence by sequence, ``acc.per_sequence``), after ``check_finite``."""
    def feed(_m, args):
        z = run.tokens(args[0])
        check_finite(z, run.index, kind)
        if getattr(acc, "per_sequence", False):
            acc.add(z, run.lengths())
        else:
            acc.add(z)
    return feed


def check_finite(z: torch.Tensor, layer: int, kind: str) -> None:
    """Stop, naming the layer and site, when activations hold NaN or Inf (they would poison every statistic)."""
    if not bool(torch.isfinite(z).all()):
        hint = ("fp16 overflows: load the model with model.dtype=bfloat16 or float32" if z.dtype == torch.float16
                else "a broken checkpoint or an overflow upstream: check the dense model's outputs")
        raise UserError(f"NaN/Inf in the calibration activations at layer {layer}, site '{kind}' (the consumer's "
                        f"input): {hint}")


def real_tokens(z: torch.Tensor, cap: Captured, batch: int) -> torch.Tensor:
    """(N_b, n) rows of ``z`` for the batch's real tokens. ``z`` is (B, T, n), or (B·T, n) where the family
    flattens tokens (OPT's FFN); padding tokens (token mask False) are dropped."""
    mask = cap.token_mask[batch] if cap.token_mask else None
    if mask is not None:
        mask = mask.to(z.device)
        z = z[mask] if z.dim() == 3 else z[mask.reshape(-1)]
    return z.reshape(-1, z.shape[-1])
