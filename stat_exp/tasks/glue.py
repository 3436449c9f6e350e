"""GLUE: the task (fine-tuned sequence classification/regression, dev metrics), local readers for the
GLUE files under the data directory (``glue/<TASK>/...tsv``), the hub's ``nyu-mll/glue`` for
online users, and the standard metrics computed with scikit-learn/scipy (``evaluate.load`` needs the hub).

Each task has a ``train`` and an ``eval`` split of :class:`Example` s. Where the local data has no train
split (QNLI), the dev set is split once, deterministically: its first ``DEV_TRAIN_FRACTION`` rows train,
the rest evaluate, and rows from such a task carry ``split="dev-heldout"`` (see the README).
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import collate
from ..errors import UserError
from ..engine.hub import hub_reachable
from .base import Setting, Task, draw, sample

log = logging.getLogger(__name__)
DEV_TRAIN_FRACTION = 0.5


@dataclass(frozen=True)
class Spec:
    name: str
    keys: tuple[str, ...]                 # text fields (1 or 2)
    num_labels: int                       # 1 = regression (STS-B)
    metric: str                           # the headline metric
    local: dict = field(default_factory=dict)   # split -> (path, reader)
    hub: str = ""                         # nyu-mll/glue config
    hub_eval: tuple[str, ...] = ("validation",)


def _rows(path: Path, header: bool) -> list[list[str]]:
    text = path.read_text(encoding="utf-8-sig")  # MRPC has a BOM
    rows = list(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[1:] if header else rows


def _sst2(p):
    return [((r[0],), int(r[1])) for r in _rows(p, True) if len(r) >= 2]


def _cola(p):
    return [((r[3],), int(r[1])) for r in _rows(p, False) if len(r) >= 4]


def _mrpc(p):
    return [((r[3], r[4]), int(r[0])) for r in _rows(p, True) if len(r) >= 5]


def _stsb(p):
    return [((r[5], r[6]), float(r[4])) for r in _rows(p, False) if len(r) >= 7]


def _rte(p):  # HF export: sentence1, sentence2, label (0 = entailment), idx
    return [((r[0], r[1]), int(r[2])) for r in _rows(p, True) if len(r) >= 3]


def _qnli(p):  # index, question, sentence, label string
    return [((r[1], r[2]), 0 if r[3] == "entailment" else 1) for r in _rows(p, True) if len(r) >= 4]


TASKS = {
    "sst2": Spec("sst2", ("sentence",), 2, "accuracy",
                 {"train": ("glue/SST-2/train.tsv", _sst2), "eval": ("glue/SST-2/dev.tsv", _sst2)}, "sst2"),
    "cola": Spec("cola", ("sentence",), 2, "matthews",
                 {"train": ("glue/CoLA/train.tsv", _cola), "eval": ("glue/CoLA/dev.tsv", _cola)}, "cola"),
    "mrpc": Spec("mrpc", ("sentence1", "sentence2"), 2, "f1",
                 {"train": ("glue/MRPC/train.tsv", _mrpc), "eval": ("glue/MRPC/dev.tsv", _mrpc)}, "mrpc"),
    "stsb": Spec("stsb", ("sentence1", "sentence2"), 1, "spearman",
                 {"train": ("glue/STS-B/sts-train.tsv", _stsb), "eval": ("glue/STS-B/sts-dev.tsv", _stsb)}, "stsb"),
    "rte": Spec("rte", ("sentence1", "sentence2"), 2, "accuracy",
                {"train": ("glue/RTE/train.tsv", _rte), "eval": ("glue/RTE/dev.tsv", _rte)}, "rte"),
    "qnli": Spec("qnli", ("question", "sentence"), 2, "accuracy", {"dev": ("glue/QNLI/dev.tsv", _qnli)}, "qnli"),
    "qqp": Spec("qqp", ("question1", "question2"), 2, "f1", {}, "qqp"),
    "mnli": Spec("mnli", ("premise", "hypothesis"), 3, "accuracy", {}, "mnli",
                 ("validation_matched", "validation_mismatched")),
}


def spec(task: str) -> Spec:
    if task not in TASKS:
        raise UserError(f"unknown GLUE task '{task}'; choose one of: {', '.join(TASKS)}")
    return TASKS[task]


def _hub(s: Spec, split: str) -> list:
    if not hub_reachable():
        raise UserError(f"GLUE {s.name} ({split}) is not in the local data directory and the hub is unreachable; "
                        f"local GLUE tasks: {', '.join(t for t, v in TASKS.items() if v.local)}")
    from datasets import load_dataset

    ds = load_dataset("nyu-mll/glue", s.hub, split=split)
    return [(tuple(r[k] for k in s.keys), r["label"]) for r in ds]


def load_split(task: str, split: str, data_dir: str, part: str | None = None) -> tuple[list, str]:
    """(examples, split label) for ``split`` in {train, eval}; examples are ((text, [text]), label).
    ``part`` picks one hub eval split (MNLI: validation_matched / validation_mismatched)."""
    s = spec(task)
    root = Path(data_dir).expanduser()
    if split in s.local:
        path = root / s.local[split][0]
        if path.exists():
            return s.local[split][1](path), {"train": "train", "eval": "dev"}[split]
    if "dev" in s.local and (root / s.local["dev"][0]).exists():
        rows = s.local["dev"][1](root / s.local["dev"][0])
        cut = int(len(rows) * DEV_TRAIN_FRACTION)
        return (rows[:cut], "dev-first-half") if split == "train" else (rows[cut:], "dev-heldout")
    if s.local and not hub_reachable():
        missing = s.local.get(split, s.local.get("dev"))[0]
        raise UserError(f"{root / missing} not found; set paths.data_dir to a directory with the GLUE files "
                        f"(or $STAT_EXP_DATA)")
    if split == "train":
        return _hub(s, "train"), "train"
    return _hub(s, part or s.hub_eval[0]), "dev"


def eval_parts(task: str) -> dict[str, str | None]:
    """Metric-name suffix -> hub eval part: {"": None} for most tasks, MNLI matched ("_m") and mismatched ("_mm")."""
    parts = spec(task).hub_eval
    if len(parts) == 1:
        return {"": None}
    return {"_" + ("mm" if p.endswith("mismatched") else "m"): p for p in parts}


def encode(tokenizer, examples: list, max_len: int) -> list[dict]:
    """One tokenized dict per example (no padding; :func:`collate` pads a batch)."""
    firsts = [e[0][0] for e in examples]
    seconds = [e[0][1] for e in examples] if len(examples) and len(examples[0][0]) > 1 else None
    enc = tokenizer(firsts, seconds, truncation=True, max_length=max_len)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    return [{**{k: enc[k][i] for k in keys}, "labels": examples[i][1]} for i in range(len(examples))]


def batches(tokenizer, examples: list, batch_size: int, max_len: int, sort: bool = True, labels: bool = True):
    """Padded batches; sorted by length (much less padding) with the original order recoverable."""
    items = encode(tokenizer, examples, max_len)
    order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"])) if sort else list(range(len(items)))
    out = []
    for i in range(0, len(order), batch_size):
        b = collate([items[j] for j in order[i:i + batch_size]], tokenizer.pad_token_id)
        if not labels:
            b.pop("labels")
        out.append(b)
    return out, order


def mean_length(bs: list[dict]) -> float:
    return float(sum(b["attention_mask"].sum() for b in bs) / sum(len(b["attention_mask"]) for b in bs))


def metrics(task: str, preds, labels) -> dict:
    """The GLUE metrics: accuracy (+F1 for MRPC/QQP), Matthews for CoLA, Pearson/Spearman for STS-B."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    p, y = np.asarray(preds), np.asarray(labels)
    if spec(task).num_labels == 1:
        return {"pearson": float(pearsonr(p, y)[0]), "spearman": float(spearmanr(p, y)[0])}
    out = {"accuracy": float(accuracy_score(y, p))}
    if task in ("mrpc", "qqp"):
        out["f1"] = float(f1_score(y, p))
    if task == "cola":
        out["matthews"] = float(matthews_corrcoef(y, p))
    return out


@torch.no_grad()
def predict(model, bs: list[dict], order: list[int], device="cpu") -> np.ndarray:
    """Predictions in the examples' original order (argmax, or the score for regression)."""
    outs = []
    for b in bs:
        b = {k: v.to(device) for k, v in b.items() if k != "labels"}
        logits = model(**b).logits.float().cpu()
        outs.append(logits[:, 0] if logits.shape[-1] == 1 else logits.argmax(-1))
    flat = torch.cat(outs).numpy()
    res = np.empty_like(flat)
    res[np.asarray(order)] = flat
    return res


def evaluate(model, task: str, bs: list[dict], order: list[int], labels: list, device="cpu") -> dict:
    return metrics(task, predict(model, bs, order, device), labels)


def train_items(task_cfg: dict, tokenizer, data_dir: str, recipe: dict) -> tuple[list[dict], str]:
    """Tokenized fine-tuning items (dicts of lists + labels) and the split's label."""
    import random

    ex, split = load_split(task_cfg["glue_task"], "train", data_dir)
    if recipe.get("train_limit"):
        ex = random.Random(0).sample(ex, min(len(ex), int(recipe["train_limit"])))
    return encode(tokenizer, ex, recipe["max_len"]), split


class GlueTask(Task):
    """A GLUE task: dev metrics of a sequence-classification model; calibration on ``calib`` train
    examples; FLOPs at the dev set's mean length; labelled batches of ``label_batch_size``."""

    has_labels = True

    def __init__(self, cfg: dict, tok, setting: Setting):
        super().__init__(cfg, tok, setting)
        task, n = cfg["glue_task"], int(cfg["max_len"])
        train, _ = load_split(task, "train", setting.data_dir)
        self.train = train
        self.picked = sample(train, setting.calib, setting.seed, "examples", f"the {task} train split")
        self.parts = {}
        for suffix, part in eval_parts(task).items():
            ex, self.split = load_split(task, "eval", setting.data_dir, part)
            bs, order = batches(tok, ex, int(cfg["eval_batch_size"]), n)
            self.parts[suffix] = (bs, order, [e[1] for e in ex])

    @property
    def cost_seqlen(self) -> int:
        return max(1, round(mean_length(next(iter(self.parts.values()))[0])))

    def calibration(self) -> list[dict]:
        return batches(self.tok, self.picked, self.setting.calib_batch_size, int(self.cfg["max_len"]), sort=False,
                       labels=False)[0]

    def labelled(self, n: int | None = None) -> list[dict]:
        ex = draw(self.train, n, self.setting.seed, self.picked)
        return batches(self.tok, ex, int(self.cfg["label_batch_size"]), int(self.cfg["max_len"]), sort=False)[0]

    def evaluate(self, model, device) -> dict:
        task, res = self.cfg["glue_task"], {}
        for suffix, (bs, order, labels) in self.parts.items():
            res.update({f"{k}_{task}{suffix}": v for k, v in evaluate(model, task, bs, order, labels, device).items()})
        return {**res, "eval_split": self.split}


TASK = GlueTask
