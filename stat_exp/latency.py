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
