"""STAT's statistics from one dense walk, per site: the Gram G = ZᵀZ of the consumer input (or AᵀA of a
sketch/TSQR factor), Σz and the token count N; per layer, the residual-stream energy Σ‖h‖² at its input
(and N × its median token's ‖h‖²).
Cached on disk by what they depend on (model, data, calib, seqlen, seed, dtype, sketch, version), as the
upper triangle of G in fp32 (half of the full matrix), with a JSON sidecar naming the key; the cache is
bounded (``stat_exp.cache``). Each site keeps only that triangle, packed and written to disk as soon as its
layer is walked, and memory-mapped from there (file-backed pages the kernel may evict: a 7B model's 8.8 GB
of statistics never sit in process memory); ``gram`` rebuilds one site's full matrix when it is used (a 1.5B
model's 28 FFN Grams of 8960² are 4.5 GB packed, 18 GB as full float64 matrices)."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch

from ... import cache, files
from ...core.linalg import centered, make_accumulator
from ...engine.capture import Captured, walk
from ...errors import UserError
from ...progress import progress

log = logging.getLogger(__name__)
CACHE_VERSION = 5  # bump when the statistics' meaning or storage changes


def cache_path(cache_dir: str | None, cache_key: dict | None, sketch: str, sketch_dim) -> Path | None:
    if not (cache_dir and cache_key):
        return None
    key = {**cache_key, "sketch": sketch, "sketch_dim": sketch_dim, "v": CACHE_VERSION}
    h = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"stat-{h}.pt"


def _upper(n: int, device=None) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool, device=device).triu_()


def pack(G: torch.Tensor) -> torch.Tensor:
    """The upper triangle (rows first) of a symmetric (n, n) matrix, in fp32, on the host."""
    return G.float()[_upper(G.shape[0], G.device)].cpu()


def unpack(v: torch.Tensor, blocks: int = 8, dtype=torch.float32) -> torch.Tensor:
    """The symmetric (n, n) matrix (``dtype``) whose upper triangle (rows first) is ``v``: each row's slice
    copied into place (no n × n mask or second matrix), then the lower triangle filled by ``blocks`` strip
    transposes and the diagonal blocks' own."""
    n = int(((8 * v.numel() + 1) ** 0.5 - 1) / 2)
    G = torch.empty(n, n, dtype=dtype, device=v.device)
    for i, row in enumerate(torch.split(v, list(range(n, 0, -1)))):
        G[i, i:] = row
    step = -(-n // blocks) if n else 1
    for s in range(0, n, step):
        e = min(s + step, n)
        G[s:e, :s] = G[:s, s:e].T
        D = G[s:e, s:e]
        D.copy_(D.triu() + D.triu(1).T)
    return G


def site_stat(acc) -> dict:
    """{'G', 's1', 'n'} of one accumulator (the Gram in its accumulated precision)."""
    return {"G": acc.gram(), "s1": acc.s1, "n": acc.n}


def collect(ctx, cap: Captured, sketch: str, sketch_dim, path: Path | None, max_bytes: int | None = None) -> list:
    """Per layer {kind: {'G' (packed upper triangle, fp32, host), 's1', 'n', 'resid', 'resid_median'}}: from
    ``path`` when cached, else one walk (and stored there, evicting least-recently-used entries beyond
    ``max_bytes``). A second job asking for the same entry while one computes it waits and reads it
    (``cache.fetch``)."""
    if path is None:
        return _walk(ctx, cap, sketch, sketch_dim, None)
    spill: list[Path] = []

    def compute():
        log.info("STAT statistics: computing (one walk) into %s", path)
        return _walk(ctx, cap, sketch, sketch_dim, path.parent, spill)

    def save(packed, tmp):
        torch.save(packed, tmp)
        files.write_text_atomic(path.with_suffix(".json"), json.dumps(ctx.cache_key, sort_keys=True))

    try:
        return cache.fetch(path, compute, save, cache.load, max_bytes)
    finally:
        for d in spill:
            shutil.rmtree(d, ignore_errors=True)


def _walk(ctx, cap: Captured, sketch: str, sketch_dim, spill_parent: Path | None, keep: list | None = None) -> list:
    """One walk; each layer's statistics packed into a spill file (``stat-spill-<host>-<pid>-*``, removed by
    the caller, or at once when ``keep`` is None: a mapping outlives its file's name) and mapped from there."""
    packed: list = []
    spill = Path(tempfile.mkdtemp(prefix=f"stat-spill-{files.owner()}-", dir=spill_parent))

    def record(li, layer, stats, run):
        hidden = run.streams["main"].hidden
        resid = float(sum(h.float().square().sum() for h in hidden))  # Σ‖h‖² at its input
        energy = torch.cat([h.float().square().sum(-1).flatten() for h in hidden])  # ‖h_t‖² per token
        typical = float(energy.median()) * energy.numel()  # median token ‖h‖² × N: blind to a few sinks
        f = spill / f"{li:04d}.pt"
        torch.save({k: {"G": pack(a.gram()), "s1": a.s1.cpu(), "n": a.n, "resid": resid, "resid_median": typical}
                    for k, a in stats.items()}, f)
        packed.append(torch.load(f, mmap=True, weights_only=True))
        stats.clear()  # spilled: the walk keeps none of this layer's matrices

    try:
        walk(ctx.model, ctx.adapter, cap, ctx.device, lambda kind: make_accumulator(sketch, sketch_dim, ctx.seed),
             record, desc="stat: calibrate")
    finally:
        if keep is None:
            shutil.rmtree(spill, ignore_errors=True)
        else:
            keep.append(spill)
    return packed


def full(st: dict, dtype=None) -> torch.Tensor:
    """The site's Gram as a full matrix (``collect`` keeps it packed), in its stored precision or ``dtype``."""
    G = st["G"]
    return unpack(G, dtype=dtype or G.dtype) if G.dim() == 1 else G.to(dtype or G.dtype)


def diagonal(st: dict) -> torch.Tensor:
    """The Gram's diagonal Σ_t z_tj² in float64, read from the packed upper triangle without unpacking it
    (row i of the triangle starts at i·n − i(i−1)/2)."""
    G = st["G"]
    if G.dim() == 2:
        return G.diagonal().double()
    n = int(((8 * G.numel() + 1) ** 0.5 - 1) / 2)
    i = torch.arange(n, device=G.device)
    return G[i * n - i * (i - 1) // 2].double()


def gram(st: dict, centre: bool, device) -> torch.Tensor:
    """The site's Gram as a new float64 matrix on ``device`` (unpacked straight into float64); centred
    (ZᵀZ − Nμμᵀ, in place) for the intercept correction."""
    G = full(st, torch.float64).to(device)
    G = G.clone() if G.data_ptr() == st["G"].data_ptr() else G  # an unpacked (full) entry: not the stored one
    return centered(G, st["s1"], st["n"], inplace=True) if centre else G


def model_loss(out, gen: torch.Generator) -> torch.Tensor:
    """The summed loss of targets drawn from the model's own prediction (``gen`` seeds the draws): categorical
    draws (Gumbel-max) from every logits tensor of ``out`` (``logits``; QA: ``start_logits``, ``end_logits``), a
    one-output regression's ŷ + N(0, 1). Its gradients' second moment is the model's Fisher (the Hessian of the
    KL divergence from the dense model's predictions), whatever the task's labels."""
    heads = [getattr(out, k) for k in ("logits", "start_logits", "end_logits") if getattr(out, k, None) is not None]
    if not heads:
        raise UserError(f"allocation=fisher needs the model's predictions; {type(out).__name__} has no logits: prune "
                        "its task model (a fine-tuned checkpoint) or use allocation=greedy")
    loss = 0.0
    for z in heads:
        z = z.float()
        if z.shape[-1] == 1:  # regression: a unit Gaussian around the prediction
            y = z.detach() + torch.randn(z.shape, generator=gen).to(z)
            loss = loss + 0.5 * (z - y).square().sum()
        else:
            gumbel = -torch.empty(z.shape).exponential_(generator=gen).log().to(z)
            y = (z.detach() + gumbel).argmax(-1)
            loss = loss + torch.nn.functional.cross_entropy(z.flatten(0, -2), y.flatten(), reduction="sum")
    return loss


@contextmanager
def recomputed(model, layers):
    """Inside: each layer's forward runs under non-reentrant activation checkpointing (its inputs are saved, its
    inside is recomputed during the backward pass), so a backward pass holds one layer's activations instead of
    all of them (a 2048-token window of a 1.5B fp32 model: about 12 GB less); gradients, the graph and forward
    hooks are unchanged, a hooked output is still a graph node. No key-value cache (a recomputed layer would
    append to it twice)."""
    from torch.utils.checkpoint import checkpoint

    saved, config = [], getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    try:
        if use_cache is not None:
            config.use_cache = False
        for layer in layers:
            saved.append((layer, layer.__dict__.get("forward")))
            layer.forward = partial(checkpoint, type(layer).forward.__get__(layer), use_reentrant=False)
        yield
    finally:
        if use_cache is not None:
            config.use_cache = use_cache
        for layer, fwd in saved:
            if fwd is None:
                del layer.forward
            else:
                layer.forward = fwd


def output_fisher(ctx, batches: list[dict]) -> list[float]:
    """Per site, the model's sensitivity to its output: w = tr F / d with F = Σ_t g_t g_tᵀ / N, g_t = ∂ℓ/∂y_t,
    y_t ∈ R^d the consumer's output at token t, ℓ = ``model_loss`` (targets drawn from the dense model itself, so
    F is its Fisher and the labels of ``batches`` are not read), N the tokens seen. One forward and backward pass
    per batch (each layer recomputed in the backward pass: ``recomputed``), no weight gradients. An error δy
    at the site costs ≈ ½ δyᵀ F δy of KL from the dense model's predictions, ≈ ½ w ‖δy‖² for an error spread
    over the d directions; downstream amplification included: the gradient at layer l carries every later
    layer's Jacobian."""
    from ...engine.capture import _to, hooks

    model, n = ctx.model, len(ctx.site_keys)
    sums, tokens, outs = torch.zeros(n, dtype=torch.float64), 0, {}
    req = {k: p.requires_grad for k, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(ctx.seed)

    def keep(i):
        def hook(_mod, _args, out):
            outs[i] = out
        return hook

    def leaf(_mod, _args, out):  # frozen weights: the graph starts at the embeddings' output
        return out.detach().requires_grad_(True)

    try:
        for p in model.parameters():
            p.requires_grad_(False)
        model.to(ctx.device)
        with hooks() as hs, torch.enable_grad(), recomputed(model, ctx.adapter.layers(model)):
            hs.append(model.get_input_embeddings().register_forward_hook(leaf))
            hs += [ctx.site(i).consumer_linear.register_forward_hook(keep(i)) for i in range(n)]
            for b in progress(batches, "stat: output Fisher", unit="batch"):
                outs.clear()
                b = {k: v for k, v in b.items() if k not in ("labels", "start_positions", "end_positions")}
                loss = model_loss(model(**_to(b, ctx.device)), gen)
                grads = torch.autograd.grad(loss, [outs[i] for i in range(n)])
                sums += torch.stack([g.double().square().sum() / g.shape[-1] for g in grads]).cpu()
                mask = b.get("attention_mask")
                tokens += int(mask.sum()) if mask is not None else b["input_ids"].numel()
    finally:
        for k, p in model.named_parameters():
            p.requires_grad_(req[k])
        model.to("cpu")
    return (sums / max(tokens, 1)).tolist()


@torch.no_grad()
def calibration_loss(ctx, model, batches: list[dict]) -> float:
    """The mean over the sequences of ``batches`` of ``model``'s task loss on each (HF's ``loss`` from the batches'
    labels: a language model's next-token cross-entropy on a calibration window), one sequence at a time (four
    2048-token windows' logits of a 151k-token vocabulary would take 5 GB)."""
    from ...engine.capture import _to
    from ...engine.placement import on_device

    losses = []
    with on_device(model, ctx.adapter.layers(model), ctx.device):
        for b in batches:
            for j in range(len(b["input_ids"])):
                out = model(**_to({k: v[j:j + 1] for k, v in b.items()}, ctx.device))
                if getattr(out, "loss", None) is None:
                    raise UserError(f"allocation=choose compares the candidates' task loss; {type(out).__name__} "
                                    "gives none: prune the task model (a fine-tuned checkpoint) or pick one allocation")
                losses.append(float(out.loss))
    return sum(losses) / len(losses)


def fisher(ctx, path: Path | None, max_bytes: int | None = None) -> list[float]:
    """``output_fisher`` on ``ctx.labelled``, cached at ``path`` (beside the statistics, same key) when given."""
    if path is None:
        return output_fisher(ctx, ctx.labelled)

    def save(values, tmp):
        torch.save(values, tmp)
        files.write_text_atomic(path.with_suffix(".json"), json.dumps({**ctx.cache_key, "entry": "output Fisher"},
                                                                      sort_keys=True))

    return cache.fetch(path, lambda: output_fisher(ctx, ctx.labelled), save, cache.load, max_bytes)
