"""STAT's statistics from one dense walk, per site: the Gram G = ZᵀZ of the consumer input (or AᵀA of a
sketch/TSQR factor), Σz and the token count N; per layer, the residual-stream energy Σ‖h‖² at its input.
Cached on disk by what they depend on (model, data, calib, seqlen, seed, dtype, sketch, version), as the
upper triangle of G in fp32 (half of the full matrix; the full symmetric G is rebuilt from it, for fresh and
cached statistics alike), with a JSON sidecar naming the key; the cache is bounded (``stat_exp.cache``)."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from ... import cache
from ...core.linalg import centered, make_accumulator
from ...engine.capture import Captured, walk

log = logging.getLogger(__name__)
CACHE_VERSION = 3  # bump when the statistics' meaning or storage changes


def cache_path(cache_dir: str | None, cache_key: dict | None, sketch: str, sketch_dim) -> Path | None:
    if not (cache_dir and cache_key):
        return None
    key = {**cache_key, "sketch": sketch, "sketch_dim": sketch_dim, "v": CACHE_VERSION}
    h = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"stat-{h}.pt"


def pack(G: torch.Tensor) -> torch.Tensor:
    """The upper triangle (rows first) of a symmetric (n, n) matrix, in fp32."""
    i, j = torch.triu_indices(G.shape[0], G.shape[0])
    return G.float()[i, j]


def unpack(v: torch.Tensor) -> torch.Tensor:
    """The symmetric (n, n) fp32 matrix whose upper triangle is ``v``."""
    n = int(((8 * v.numel() + 1) ** 0.5 - 1) / 2)
    i, j = torch.triu_indices(n, n)
    G = torch.zeros(n, n, dtype=torch.float32)
    G[i, j] = v
    G[j, i] = v
    return G


def site_stat(acc) -> dict:
    """{'G', 's1', 'n'} of one accumulator (the Gram in its accumulated precision)."""
    return {"G": acc.gram(), "s1": acc.s1, "n": acc.n}


def collect(ctx, cap: Captured, sketch: str, sketch_dim, path: Path | None, max_bytes: int | None = None) -> list:
    """Per layer {kind: {'G' (fp32, host), 's1', 'n', 'resid'}}: from ``path`` when cached, else one walk (and
    stored there, evicting least-recently-used entries beyond ``max_bytes``)."""
    if path is not None and path.exists():
        log.info("STAT statistics from cache %s", path)
        packed = cache.load(path)
    else:
        resid = []  # Σ‖h‖² of each layer's input (the residual stream the sites write into)

        def record(li, layer, stats, run):
            resid.append(float(sum(h.float().square().sum() for h in run.streams["main"].hidden)))

        raw, _ = walk(ctx.model, ctx.adapter, cap, ctx.device,
                      lambda kind: make_accumulator(sketch, sketch_dim, ctx.seed), record, desc="stat: calibrate")
        packed = [{k: {"G": pack(a.gram()), "s1": a.s1.cpu(), "n": a.n, "resid": r} for k, a in layer.items()}
                  for layer, r in zip(raw, resid)]
        if path is not None:
            cache.store(path, packed, max_bytes)
            path.with_suffix(".json").write_text(json.dumps(ctx.cache_key, sort_keys=True))
    return [{k: {**st, "G": unpack(st["G"])} for k, st in layer.items()} for layer in packed]


def gram(st: dict, centre: bool, device) -> torch.Tensor:
    """The site's Gram in float64 on ``device``; centred (ZᵀZ − Nμμᵀ) for the intercept correction."""
    G = st["G"].to(device, torch.float64)
    return centered(G, st["s1"].to(G.device), st["n"]) if centre else G
