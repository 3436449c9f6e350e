"""Weight-only quantization after pruning: int8 or int4 weights for every Linear inside the model's layers,
through optimum-quanto, applied to a pruned model (after the fold) or to the dense one.

Why optimum-quanto: it quantizes weight-only int8 *and* int4 (group-wise) on CPU and CUDA with torch 2.13 and
transformers 5. torchao 0.18's int8 weight-only runs on CPU, but its int4 weight-only needs the ``mslk`` kernels
or CUDA tile packing, so it cannot run the int4 rows on a CPU host.

| name          | meaning                                                                                    |
|---------------|--------------------------------------------------------------------------------------------|
| ``bits``      | 8 (quanto ``qint8``: one scale per output row) or 4 (``qint4``: group-wise scales + shift) |
| group         | int4 only, along in_features: 128, lowered by 32 until it divides in_features (≥ 32); a    |
|               | width with no such divisor (a pruned FFN of 1234 neurons) gets one scale per output row    |
| quantized     | ``nn.Linear`` inside ``adapter.layers(model)``; embeddings, LM head and task heads stay fp, |
|               | and so do per-query-head K/V (``GatheredLinear``: quanto's Linear would drop the gather)  |
| state bytes   | payload of ``model.state_dict()`` (shared storage once): bytes in memory and on disk       |

CPU kernels: with fp32 activations quanto dequantizes in its own (safe) path; its bf16/fp16 CPU kernels crash on
some pruned widths (e.g. 500 × 77), so a non-fp32 model on CPU is refused with a one-line fix.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .remote import GatheredLinear

QTYPES = {8: "qint8", 4: "qint4"}


def check(bits: int | None, dtype: torch.dtype, device: str) -> None:
    """Raise ``UserError`` when ``bits`` cannot run on ``device`` with weights of ``dtype``."""
    if bits is None:
        return
    if bits not in QTYPES:
        raise UserError(f"quant bits={bits}; choose quant=none, quant=int8 or quant=int4")
    if str(device).startswith("cpu") and dtype != torch.float32:
        raise UserError(f"quant=int{bits} on CPU needs model.dtype=float32 (the {dtype} CPU kernels of "
                        "optimum-quanto crash on pruned widths); use model.dtype=float32 or a GPU")


def state_bytes(model: nn.Module) -> int:
    """Bytes of ``model.state_dict()``'s tensors, each storage counted once (tied weights, quantized parts)."""
    seen, total = set(), 0
    for t in model.state_dict().values():
        for part in _plain_parts(t):
            key = (part.untyped_storage().data_ptr(), part.storage_offset(), part.numel())
            if key not in seen:
                seen.add(key)
                total += part.numel() * part.element_size()
    return total


def _plain_parts(t: torch.Tensor) -> list[torch.Tensor]:
    """A quanto tensor's inner tensors (data, scale, shift), or the tensor itself."""
    if hasattr(t, "__tensor_flatten__") and type(t) is not torch.Tensor and not isinstance(t, nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return [p for n in names for p in _plain_parts(getattr(t, n))]
    return [t]


def quantize(model: nn.Module, adapter, bits: int | None) -> dict:
    """Quantize, in place and frozen, the Linears inside ``adapter.layers(model)`` to ``bits``; returns the
    row fields ``quant``, ``quant_linears`` (how many), ``quant_grouped`` (fraction with group-wise scales) and
    ``weight_bytes`` (``state_bytes`` after)."""
    if bits is None:
        return {"quant": "none", "weight_bytes": state_bytes(model)}
    from optimum import quanto

    layers = adapter.layers(model)
    names = [f"{i}.{n}" for i, layer in enumerate(layers) for n, m in layer.named_modules()
             if isinstance(m, nn.Linear) and not isinstance(m, GatheredLinear)]
    quanto.quantize(layers, weights=getattr(quanto, QTYPES[bits]), include=names)
    quanto.freeze(layers)
    q = [m for m in layers.modules() if isinstance(m, quanto.QModuleMixin)]
    grouped = sum(getattr(m, "weight_group_size", None) is not None for m in q)
    return {"quant": f"int{bits}", "quant_linears": len(q), "quant_grouped": grouped / max(len(q), 1),
            "weight_bytes": state_bytes(model)}
