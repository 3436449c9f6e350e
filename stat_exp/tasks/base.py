"""The task interface: what the pipeline asks of every task kind, and the one calibration sampler.

A task owns its data. Built before the model loads (so a bad ``calib`` or a missing file fails in
seconds), it gives calibration batches, labelled batches for gradient methods, the sequence length the
cost model prices attention at, and ``evaluate(model)`` → metrics. One file per kind in this package
(``lm``, ``glue``, ``squad``, ``embed``), each defining ``TASK``; the YAML's ``kind`` picks the file.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import UserError


@dataclass(frozen=True)
class Setting:
    """The run-level knobs a task reads (from the top-level config)."""

    data_dir: str
    calib: int
    seed: int
    seqlen: int
    calib_batch_size: int = 4
    calib_data: str = "c4"
    eval_windows: int | None = None
    eval_batch_size: int = 1
    bos: str = "auto"            # perplexity windows' BOS: auto | none | corpus | window (tasks/lm.py)
    model_type: str = ""         # the model's config.model_type (for conventions such as ``bos``)


def sample(pool: Sequence, n: int, seed: int, what: str = "examples", source: str = "the calibration pool",
           ordered: bool = False) -> list:
    """``n`` items of ``pool`` drawn without replacement with ``seed`` (in draw order, or pool order when
    ``ordered``); the one "calib too large" message."""
    if n > len(pool):
        raise UserError(f"calib={n} asks for {n} {what} but {source} holds only {len(pool)}; lower calib")
    pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]
    if ordered:
        pick = pick.sort().values
    return [pool[i] for i in pick.tolist()]


def draw(pool: Sequence, n: int | None, seed: int, default: list) -> list:
    """``n`` items of ``pool`` for a gradient method's labelled sample: ``default`` when n is None, else drawn
    with ``seed``, without replacement when the pool holds n, with replacement when it holds fewer."""
    if n is None:
        return default
    g = torch.Generator().manual_seed(seed)
    if n <= len(pool):
        pick = torch.randperm(len(pool), generator=g)[:n]
    else:
        pick = torch.randint(len(pool), (n,), generator=g)
    return [pool[i] for i in pick.tolist()]


class Task(ABC):
    """One task kind. ``cfg`` is the task's YAML as a dict; ``tok`` the model's tokenizer."""

    has_labels = False  # True when ``labelled`` gives batches with the task loss

    def __init__(self, cfg: dict, tok, setting: Setting):
        self.cfg, self.tok, self.setting = cfg, tok, setting
        self.name = cfg["name"]
        self.metric = f"{cfg['metric']}_{cfg['datasets'][0]}"  # the headline metric's row key

    @property
    def calib_source(self) -> str:
        """What the calibration data is, for the row (a corpus or the task itself)."""
        return self.name

    @abstractmethod
    def calibration(self) -> list[dict]:
        """Model-input batches (input_ids, attention_mask, ...) of the ``calib`` calibration examples."""

    def labelled(self, n: int | None = None) -> list[dict] | None:
        """Batches with labels (the task loss) for methods that need gradients, of ``n`` examples of the task's
        training data (``draw``; None: the calibration examples); None if the task has none."""
        return None

    def unseen(self, n: int, batch: int) -> list[dict]:
        """``n`` labelled examples of the calibration corpus that are not calibration examples, ``batch`` a batch."""
        raise UserError(f"method.options.choose_on=unseen draws windows of a language-model corpus besides the "
                        f"calibration ones; task {self.name} has none: use method.options.choose_on=calibration")

    def recovery_windows(self, n: int):
        """``n`` token windows for recovery fine-tuning (language-model tasks only)."""
        raise UserError(f"recover=lora trains with the next-token loss on a corpus; task {self.name} is not a "
                        "language-model task: use recover=none, or a task such as wikitext2")

    @property
    @abstractmethod
    def cost_seqlen(self) -> int:
        """The sequence length attention FLOPs are priced at (the evaluation data's length)."""

    def heldout(self, n: int) -> list[dict]:
        """Up to ``n`` model-input batches of evaluation data (never calibration data), for the analysis."""
        raise UserError(f"task {self.name} gives no held-out inputs to analyze; use a language-model task "
                        "(wikitext2, ptb, c4) or stsb_embed")

    def prepare(self, dense, device) -> None:
        """Called once with the dense model before any evaluation (e.g. reference outputs)."""

    @abstractmethod
    def evaluate(self, model, device) -> dict:
        """Metrics of ``model`` (already on ``device``), including the split they were measured on."""
