"""Measured latency of a model's forward pass: warm-up, then the median of repeated timed runs
(CUDA-synchronised on a GPU). Inputs are random token ids of a fixed (batch, sequence) shape, so the dense
and the sliced model see the same work apart from what pruning removed."""
from __future__ import annotations

import statistics
import time

import torch


def inputs(vocab_size: int, batch_size: int, seqlen: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, max(6, vocab_size), (batch_size, seqlen), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@torch.inference_mode()
def latency_ms(model, batch: dict, device="cpu", warmup: int = 3, repeats: int = 10) -> float:
    """Median wall time (ms) of ``model(**batch)`` over ``repeats`` runs after ``warmup`` runs."""
    model.to(device)
    b = {k: v.to(device) for k, v in batch.items()}
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        model(**b)
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model(**b)
        sync()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def elapsed(t0: float, device) -> float:
    """Seconds since ``t0`` (``time.perf_counter``), after the device's queued work has finished."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


class Probe:
    """Row fields ``latency_ms``, ``speedup`` and ``latency_shape`` for the dense and each pruned model; the
    dense model is measured once, also when its own row was logged by an earlier run. Off: empty fields."""

    def __init__(self, dense, settings: dict | None, seqlen: int, seed: int, device):
        s = settings or {}
        self.dense, self.device, self.dense_ms = dense, device, None
        self.s = s
        self.batch = (inputs(dense.config.vocab_size, int(s["batch_size"]), int(s.get("seqlen") or seqlen), seed)
                      if s.get("enabled") else None)

    def _measure(self, model) -> float:
        ms = latency_ms(model, self.batch, self.device, int(self.s["warmup"]), int(self.s["repeats"]))
        model.to("cpu")
        return ms

    def fields(self, model) -> dict:
        if self.batch is None:
            return {}
        if self.dense_ms is None:
            self.dense_ms = self._measure(self.dense)
        ms = self.dense_ms if model is self.dense else self._measure(model)
        return {"latency_ms": ms, "speedup": self.dense_ms / ms, "latency_shape": list(self.batch["input_ids"].shape)}
