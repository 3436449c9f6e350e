"""Where and in what precision modules compute: a model is *stored* in its dtype on the host (bf16 for
models of ≥ 1B parameters, possibly memory-mapped from disk) and *computed* a part at a time on the
device, in the compute dtype.

| name            | meaning                                                                        |
|-----------------|--------------------------------------------------------------------------------|
| storage dtype   | the dtype of the module's floating-point parameters as loaded                  |
| compute dtype   | ``compute_dtype(storage, device)``: fp32 on a CPU for bf16/fp16 storage (CPUs  |
|                 | without bf16 units multiply bf16 150× slower than fp32), else the storage dtype |
| borrowed        | a module whose parameters and buffers are replaced, for a block, by copies on    |
|                 | the device (parameters in the compute dtype); then it gets its own tensors back |
| streamed        | a whole model run with every layer borrowed only during its own forward        |

Borrowing never writes the stored tensors (a memory-mapped model stays mapped, clean and evictable) and
copies nothing when device and dtype already match. A tensor the block replaced (surgery swaps in new
Linears) is kept and moved back to the host in the storage dtype.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch
from torch import nn

HALF = (torch.bfloat16, torch.float16)


def storage_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s first floating-point parameter (float32 for a module without one)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def compute_dtype(storage: torch.dtype, device) -> torch.dtype:
    """fp32 on a CPU for half-precision storage, else the storage dtype."""
    return torch.float32 if torch.device(device).type == "cpu" and storage in HALF else storage


def _tensors(module: nn.Module, recurse: bool):
    """(the dict holding it, its name, the tensor) for every parameter and buffer of ``module``."""
    mods = module.modules() if recurse else [module]
    for m in mods:
        for store in (m._parameters, m._buffers):
            for name, t in store.items():
                if t is not None:
                    yield store, name, t


@contextmanager
def borrowed(module: nn.Module, device, dtype: torch.dtype | None = None, recurse: bool = True) -> Iterator[nn.Module]:
    """``module`` with its tensors on ``device`` (floating-point parameters in ``dtype``; buffers keep theirs,
    as rotary tables stay fp32) inside the block, its own tensors back after it (see the module docstring)."""
    home, storage = None, storage_dtype(module)
    own: set[int] = set()  # data pointers of the tensors the module had
    kept: dict = {}  # Parameter id or (buffer dict id, name) -> (its own tensor, the borrowed copy's pointer)
    for store, name, t in _tensors(module, recurse):
        home = t.device if home is None else home
        own.add(t.data_ptr())
        param = isinstance(t, nn.Parameter)
        new = t.data.to(device, dtype if (dtype is not None and param and t.is_floating_point()) else None)
        if new.data_ptr() == t.data_ptr():
            continue
        if param:
            kept[id(t)] = (t.data, new.data_ptr())
            t.data = new
        else:
            kept[id(store), name] = (t, new.data_ptr())
            store[name] = new
    try:
        yield module
    finally:
        _give_back(module, kept, own, home, storage, recurse)


def _give_back(module, kept, own, home, storage, recurse) -> None:
    """Each borrowed tensor's own tensor back; a tensor made inside the block moved to ``home`` (a parameter
    in the ``storage`` dtype)."""
    for store, name, t in _tensors(module, recurse):
        param = isinstance(t, nn.Parameter)
        mine = kept.get(id(t) if param else (id(store), name))
        if mine is not None and t.data_ptr() == mine[1]:
            back = mine[0]
        elif t.data_ptr() not in own:
            back = t.data.to(home, storage if (param and t.is_floating_point()) else None)
        else:
            continue
        if param:
            t.data = back
        else:
            store[name] = back


def outside(model: nn.Module, layers: nn.ModuleList) -> list[nn.Module]:
    """The modules holding ``model``'s tensors outside ``layers`` (embeddings, rotary tables, final norm,
    heads), each to be borrowed without recursing."""
    inside = {id(m) for m in layers.modules()}
    return [m for m in model.modules() if id(m) not in inside and (m._parameters or m._buffers)]


@contextmanager
def borrowed_outside(model: nn.Module, layers: nn.ModuleList, device, dtype=None) -> Iterator[None]:
    """Everything but ``layers`` borrowed onto ``device`` (a large model never lands there whole)."""
    with ExitStack() as stack:
        for m in outside(model, layers):
            stack.enter_context(borrowed(m, device, dtype, recurse=False))
        yield


def fits(model: nn.Module, device) -> bool:
    """Whether ``model`` computes on ``device`` whole: in its own dtype there, and (an accelerator) with
    its bytes under 90 % of the free memory."""
    dev = torch.device(device)
    if compute_dtype(storage_dtype(model), dev) != storage_dtype(model):
        return False
    if dev.type != "cuda":
        return True
    size = sum(t.numel() * t.element_size() for _, _, t in _tensors(model, True))
    return size < 0.9 * torch.cuda.mem_get_info(dev)[0]


@contextmanager
def streamed(model: nn.Module, layers: nn.ModuleList, device, dtype=None) -> Iterator[nn.Module]:
    """``model`` runnable on ``device`` with one layer there at a time: the parts outside the layers borrowed
    for the block, each layer borrowed from its forward pre-hook to its forward hook. The forward is the
    model's own, so it computes what the whole model computes in ``dtype`` (tested)."""
    dtype = dtype or compute_dtype(storage_dtype(model), device)
    active: dict[int, ExitStack] = {}

    def enter(i):
        def pre(mod, _args):
            active[i] = ExitStack()
            active[i].enter_context(borrowed(mod, device, dtype))
        return pre

    def leave(i):
        return lambda _mod, _args, _out: active.pop(i).close()

    with ExitStack() as stack:
        stack.enter_context(borrowed_outside(model, layers, device, dtype))
        for i, layer in enumerate(layers):
            stack.callback(layer.register_forward_pre_hook(enter(i)).remove)
            stack.callback(layer.register_forward_hook(leave(i)).remove)
        try:
            yield model
        finally:
            for s in active.values():  # a layer that raised mid-forward
                s.close()
            active.clear()


@contextmanager
def on_device(model: nn.Module, layers: nn.ModuleList | None, device) -> Iterator[nn.Module]:
    """``model`` ready to run on ``device``: borrowed whole when it ``fits``, else ``streamed`` layer by
    layer (bf16 storage on a CPU computes in fp32; a model larger than the accelerator streams)."""
    if layers is None or fits(model, device):
        with borrowed(model, device):
            yield model
    else:
        with streamed(model, layers, device):
            yield model
