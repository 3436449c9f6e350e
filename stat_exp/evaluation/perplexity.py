"""Perplexity by the pruning papers' protocol (SparseGPT/Wanda/FLAP/SliceGPT): token-level NLL over
non-overlapping windows of ``seqlen`` tokens of the joined test text; the tail shorter than a window
is dropped. C4 keeps the first 256 windows."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import corpus_text, tokenize

MAX_WINDOWS = {"c4": 256}


def eval_ids(tokenizer, corpus: str, data_dir: str) -> torch.Tensor:
    return tokenize(tokenizer, corpus_text(corpus, "validation" if corpus == "c4" else "test", data_dir))


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, seqlen: int, max_windows: int | None = None, batch_size: int = 1,
               device="cpu", desc: str = "ppl") -> dict:
    """ids: (1, L). Returns {'ppl', 'nll', 'tokens', 'windows'}."""
    n = ids.shape[1] // seqlen
    if max_windows:
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(f"text of {ids.shape[1]} tokens is shorter than one window of {seqlen}")
    windows = ids[0, : n * seqlen].view(n, seqlen)
    nll, count = 0.0, 0
    for i in tqdm(range(0, n, batch_size), desc=desc, leave=False):
        x = windows[i: i + batch_size].to(device)  # (b, T)
        logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()  # (b, T-1, V)
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item()
        count += x[:, 1:].numel()
    return {"ppl": math.exp(nll / count), "nll": nll / count, "tokens": count, "windows": n}
