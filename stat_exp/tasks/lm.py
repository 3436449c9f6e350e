"""Language modelling: perplexity by the pruning papers' protocol (SparseGPT/Wanda/FLAP/SliceGPT):
token-level NLL over non-overlapping windows of ``seqlen`` tokens of the joined test text; the tail
shorter than a window is dropped; C4 keeps the first 256 windows. A beginning-of-sequence token follows
the model's convention (``bos``): ``window`` puts one at the start of every window (Gemma: its outputs
degrade without it), ``corpus`` one at the start of the joined text (what Llama-2's tokenizer does in the
papers' scripts), ``none`` no special token; ``auto`` picks window for Gemma families, corpus when the
tokenizer adds a BOS by itself, else none. The row's ``bos`` says which. Calibration: ``calib`` non-overlapping
windows of ``seqlen`` tokens drawn (seeded) from a corpus' train split; labelled batches are the same
windows with the next-token loss."""
from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from ..data import CORPORA, corpus_rows, corpus_text, tokenize
from ..errors import UserError
from ..progress import progress
from .base import Setting, Task, sample

log = logging.getLogger(__name__)

MAX_WINDOWS = {"c4": 256}


BOS_MODES = ("auto", "none", "corpus", "window")


def bos_mode(tokenizer, model_type: str, requested: str = "auto") -> str:
    """The BOS convention for perplexity windows (module docstring); ``requested`` unless it is ``auto``."""
    if requested not in BOS_MODES:
        raise UserError(f"eval_bos={requested!r}; choose one of {', '.join(BOS_MODES)}")
    if requested != "auto":
        if requested != "none" and tokenizer.bos_token_id is None:
            raise UserError(f"eval_bos={requested} but the tokenizer has no BOS token; use eval_bos=none")
        return requested
    if tokenizer.bos_token_id is None:
        return "none"
    if model_type.removeprefix("stat_").startswith("gemma"):
        return "window"
    ids = tokenizer("a")["input_ids"]
    return "corpus" if ids and ids[0] == tokenizer.bos_token_id else "none"


def eval_ids(tokenizer, corpus: str, data_dir: str, bos: str = "none") -> torch.Tensor:
    """(1, L) ids of the evaluation split, with a BOS in front when ``bos`` is ``corpus``."""
    ids = tokenize(tokenizer, corpus_text(corpus, "validation" if corpus == "c4" else "test", data_dir))
    return torch.cat([torch.tensor([[tokenizer.bos_token_id]]), ids], 1) if bos == "corpus" else ids


def eval_windows(ids: torch.Tensor, seqlen: int, max_windows: int | None = None,
                 bos_id: int | None = None) -> torch.Tensor:
    """(n, seqlen) non-overlapping windows of ``ids`` (1, L), the short tail dropped, at most ``max_windows``;
    with ``bos_id``, each window is that token followed by the next seqlen − 1 tokens."""
    step = seqlen - (bos_id is not None)
    n = ids.shape[1] // step
    n = min(n, max_windows) if max_windows else n
    windows = ids[0, : n * step].view(n, step)
    if bos_id is not None:
        windows = torch.cat([torch.full((n, 1), bos_id, dtype=windows.dtype), windows], 1)
    return windows


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, seqlen: int, max_windows: int | None = None, batch_size: int = 1,
               device="cpu", desc: str = "ppl", bos_id: int | None = None) -> dict:
    """ids: (1, L). Windows of ``seqlen`` tokens; with ``bos_id``, each window is that token followed by the
    next seqlen − 1 tokens of ``ids``. Returns {'ppl', 'nll', 'tokens', 'windows'}."""
    windows = eval_windows(ids, seqlen, max_windows, bos_id)
    n = len(windows)
    if n == 0:
        raise ValueError(f"text of {ids.shape[1]} tokens is shorter than one window of {seqlen}")
    nll, count = 0.0, 0
    for i in progress(range(0, n, batch_size), desc, "window" if batch_size == 1 else "batch"):
        x = windows[i: i + batch_size].to(device)  # (b, T)
        logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()  # (b, T-1, V)
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item()
        count += x[:, 1:].numel()
    return {"ppl": math.exp(nll / count), "nll": nll / count, "tokens": count, "windows": n}


def corpus_windows(tokenizer, corpus: str, seqlen: int, data_dir: str, split: str = "train") -> torch.Tensor:
    """(avail, seqlen): the corpus split's tokens cut into non-overlapping windows (the short tail dropped)."""
    if corpus == "c4":
        text = "\n\n".join(corpus_rows(corpus, split, data_dir))
    else:
        text = corpus_text(corpus, split, data_dir)
    ids = tokenize(tokenizer, text)[0]
    avail = ids.numel() // seqlen
    return ids[: avail * seqlen].view(avail, seqlen)


def calibration_picks(avail: int, n: int, seed: int, corpus: str, seqlen: int, split: str = "train") -> list[int]:
    """Which of ``avail`` windows are the ``n`` calibration windows (seeded, without replacement, in order)."""
    return sample(range(avail), n, seed, f"sequences of {seqlen} tokens", f"{corpus}/{split}", ordered=True)


def calibration_windows(tokenizer, corpus: str, n: int, seqlen: int, seed: int, data_dir: str,
                        split: str = "train") -> torch.Tensor:
    """(n, seqlen) token windows drawn without replacement (seeded) from the corpus' train split."""
    windows = corpus_windows(tokenizer, corpus, seqlen, data_dir, split)
    return windows[torch.tensor(calibration_picks(len(windows), n, seed, corpus, seqlen, split), dtype=torch.long)]


def recovery_windows(tokenizer, corpus: str, n: int, calib: int, seqlen: int, seed: int, data_dir: str) -> torch.Tensor:
    """(n, seqlen) windows of the corpus' train split that are none of the ``calib`` calibration windows drawn with
    ``seed`` (``calibration_windows``): the training data of recovery fine-tuning, disjoint from calibration."""
    windows = corpus_windows(tokenizer, corpus, seqlen, data_dir)
    taken = set(calibration_picks(len(windows), calib, seed, corpus, seqlen))
    rest = [i for i in range(len(windows)) if i not in taken]
    if n > len(rest):
        raise UserError(f"recover needs {n} windows of {seqlen} tokens but {corpus}/train holds only {len(rest)} "
                        f"besides the {calib} calibration windows; lower recover.steps or recover.batch")
    pick = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed + 1))[:n]
    return windows[torch.tensor([rest[i] for i in pick.tolist()], dtype=torch.long)]


class LMTask(Task):
    """Perplexity on ``datasets`` (task YAML); calibration on ``calib_data`` (top-level config)."""

    has_labels = True

    def __init__(self, cfg: dict, tok, setting: Setting):
        super().__init__(cfg, tok, setting)
        for ds in [*cfg["datasets"], setting.calib_data]:
            if ds not in CORPORA:
                raise UserError(f"unknown corpus '{ds}' in task {self.name} or calib_data; choose from {', '.join(CORPORA)}")
        self._calib: torch.Tensor | None = None  # drawn on first use (the pipeline asks before loading weights)
        self.bos = bos_mode(tok, setting.model_type, setting.bos)
        self.sets = {ds: eval_ids(tok, ds, setting.data_dir, self.bos) for ds in cfg["datasets"]}

    @property
    def windows(self) -> torch.Tensor:
        """The (calib, seqlen) calibration windows."""
        if self._calib is None:
            s = self.setting
            self._calib = calibration_windows(self.tok, s.calib_data, s.calib, s.seqlen, s.seed, s.data_dir)
        return self._calib

    @property
    def calib_source(self) -> str:
        return self.setting.calib_data

    @property
    def cost_seqlen(self) -> int:
        return self.setting.seqlen

    def calibration(self) -> list[dict]:
        return [{"input_ids": x} for x in self.windows.split(self.setting.calib_batch_size)]

    def labelled(self, n: int | None = None) -> list[dict]:
        """The calibration windows with their next-token labels (a decoder has no released labelled sample:
        ``n`` does not apply)."""
        if n is not None:
            log.info("%s: a language-model task labels its %d calibration windows; the released sample of %d "
                     "labelled examples applies to GLUE and SQuAD", self.name, len(self.windows), n)
        bs = self.cfg.get("label_batch_size") or self.setting.calib_batch_size
        return [{"input_ids": x, "labels": x} for x in self.windows.split(bs)]

    def recovery_windows(self, n: int) -> torch.Tensor:
        """``n`` training windows for recovery fine-tuning, disjoint from the calibration windows."""
        s = self.setting
        return recovery_windows(self.tok, s.calib_data, n, s.calib, s.seqlen, s.seed, s.data_dir)

    def unseen(self, n: int, batch: int) -> list[dict]:
        """``n`` windows of the calibration corpus' train split besides the calibration windows (the ones recovery
        fine-tuning draws), with their next-token labels, ``batch`` windows a batch."""
        return [{"input_ids": x, "labels": x} for x in self.recovery_windows(n).split(batch)]

    def heldout(self, n: int) -> list[dict]:
        """The first ``n`` evaluation windows of the task's first test set, one per batch."""
        bos_id = self.tok.bos_token_id if self.bos == "window" else None
        windows = eval_windows(next(iter(self.sets.values())), self.setting.seqlen, n, bos_id)
        return [{"input_ids": w[None]} for w in windows]

    def evaluate(self, model, device) -> dict:
        s, res = self.setting, {}
        for ds, ids in self.sets.items():
            r = perplexity(model, ids, s.seqlen, s.eval_windows or MAX_WINDOWS.get(ds), s.eval_batch_size, device,
                           desc=f"ppl {ds}", bos_id=self.tok.bos_token_id if self.bos == "window" else None)
            res[f"ppl_{ds}"], res[f"windows_{ds}"] = r["ppl"], r["windows"]
        return {**res, "bos": self.bos}


TASK = LMTask
