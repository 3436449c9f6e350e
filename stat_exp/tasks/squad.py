"""SQuAD v1.1 / v2.0 extractive QA (the task and its protocol): windowed features with a doc stride, batched inference, n-best
post-processing with a maximum answer length, the null-score threshold for v2.0, and the official
EM/F1 (answer normalisation of the official evaluate-v1.1/v2.0 scripts, written from their description).

The staged data has dev files only. Articles are split once, deterministically: the first
``DEV_TRAIN_ARTICLES`` articles of dev train (fine-tuning and calibration), the rest evaluate; numbers from
that split are labelled ``dev-heldout``.
"""
from __future__ import annotations

import collections
import json
import re
import string
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import collate
from ..errors import UserError
from ..engine.hub import hub_reachable
from .base import Setting, Task, draw, sample

FILES = {"v1": "squad/dev-v1.1.json", "v2": "squad/dev-v2.0.reconstructed.json"}
DEV_TRAIN_ARTICLES = 24   # of 48 (v1.1) / 35 (v2.0)


# ---------------------------------------------------------------- data
def load_examples(version: str, data_dir: str) -> list[dict]:
    """Flattened questions: {id, title, context, question, answers: [texts], starts: [ints]} in file order."""
    path = Path(data_dir).expanduser() / FILES[version]
    if path.exists():
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    elif hub_reachable():
        from datasets import load_dataset

        ds = load_dataset("rajpurkar/squad" if version == "v1" else "rajpurkar/squad_v2", split="validation")
        return [{"id": r["id"], "title": r["title"], "context": r["context"], "question": r["question"],
                 "answers": list(r["answers"]["text"]), "starts": list(r["answers"]["answer_start"])} for r in ds]
    else:
        raise UserError(f"{path} not found; set paths.data_dir (or $STAT_EXP_DATA) to a directory with squad/")
    out = []
    for art in articles:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                out.append({"id": qa["id"], "title": art["title"], "context": para["context"],
                            "question": qa["question"], "answers": [a["text"] for a in qa["answers"]],
                            "starts": [a["answer_start"] for a in qa["answers"]]})
    return out


def split(examples: list[dict], part: str) -> list[dict]:
    """``train`` = questions of the first DEV_TRAIN_ARTICLES articles, ``eval`` = the rest."""
    titles = list(dict.fromkeys(e["title"] for e in examples))
    keep = set(titles[:DEV_TRAIN_ARTICLES])
    return [e for e in examples if (e["title"] in keep) == (part == "train")]


def _cut_questions(tokenizer, questions: list[str], max_query_len: int) -> list[str]:
    """Questions longer than max_query_len tokens are cut there (BERT's run_squad: max_query_length=64)."""
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    return [q if len(o) <= max_query_len else q[: o[max_query_len - 1][1]]
            for q, o in zip(questions, enc["offset_mapping"])]


def features(tokenizer, examples: list[dict], max_len: int = 384, stride: int = 128, train: bool = False,
             max_query_len: int = 64) -> dict:
    """Tokenize question + context into overlapping windows. Returns lists: input tensors, the example index
    of every feature, offsets (None outside the context) and, for training, start/end token positions
    (0 = [CLS] when the answer is not inside the window or the question has none)."""
    max_query_len = min(max_query_len, max_len // 4)
    if not 0 <= stride < max_len - max_query_len - 4:
        raise UserError(f"SQuAD doc stride {stride} leaves no room in a {max_len}-token window; "
                        f"lower task.stride or raise task.max_len")
    questions = _cut_questions(tokenizer, [e["question"].lstrip() for e in examples], max_query_len)
    enc = tokenizer(questions, [e["context"] for e in examples],
                    truncation="only_second", max_length=max_len, stride=stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding=False)
    sample = enc.pop("overflow_to_sample_mapping")
    offsets, starts, ends = [], [], []
    for i in range(len(enc["input_ids"])):
        seq = enc.sequence_ids(i)
        offs = [o if seq[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])]
        offsets.append(offs)
        if not train:
            continue
        ex = examples[sample[i]]
        s_tok = e_tok = 0
        if ex["answers"]:
            a0 = ex["starts"][0]
            a1 = a0 + len(ex["answers"][0])
            ctx = [k for k, o in enumerate(offs) if o is not None]
            if offs[ctx[0]][0] <= a0 and offs[ctx[-1]][1] >= a1:
                s_tok = next(k for k in ctx if offs[k][1] > a0)
                e_tok = next(k for k in reversed(ctx) if offs[k][0] < a1)
        starts.append(s_tok)
        ends.append(e_tok)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    return {"inputs": [{k: enc[k][i] for k in keys} for i in range(len(enc["input_ids"]))],
            "example": list(sample), "offsets": offsets, "start": starts, "end": ends}


def batches(tokenizer, feats: dict, batch_size: int = 64) -> tuple[list[dict], list[int]]:
    """Length-sorted padded batches (little padding) and the order that undoes the sort."""
    order = sorted(range(len(feats["inputs"])), key=lambda i: len(feats["inputs"][i]["input_ids"]))
    return [collate([feats["inputs"][j] for j in order[i:i + batch_size]], tokenizer.pad_token_id)
            for i in range(0, len(order), batch_size)], order


@torch.no_grad()
def logits(model, bs: list[dict], order: list[int], device="cpu", progress: bool = False):
    """Start/end logits per feature in feature order (lists of 1-D arrays of each feature's length)."""
    out = []
    for b in tqdm(bs, desc="squad", disable=not progress, mininterval=5):
        lens = b["attention_mask"].sum(1).tolist()
        r = model(**{k: v.to(device) for k, v in b.items()})
        s, e = r.start_logits.float().cpu().numpy(), r.end_logits.float().cpu().numpy()
        out += [(s[i, :n], e[i, :n]) for i, n in enumerate(lens)]
    res = [None] * len(out)
    for pos, i in enumerate(order):
        res[i] = out[pos]
    return res


def postprocess(examples: list[dict], feats: dict, feat_logits: list, n_best: int = 20, max_answer_len: int = 30,
                null_threshold: float | None = None) -> dict[str, str]:
    """Best span per question over all its windows. With ``null_threshold`` (v2.0) a question is answered ""
    when null_score - best_span_score > threshold (null score = min over windows of start[0] + end[0])."""
    by_example = collections.defaultdict(list)
    for f, ex in enumerate(feats["example"]):
        by_example[ex].append(f)
    preds = {}
    for i, ex in enumerate(examples):
        best, best_score, null = "", -np.inf, np.inf
        for f in by_example[i]:
            s, e = feat_logits[f]
            offs = feats["offsets"][f]
            null = min(null, s[0] + e[0])
            top_s = np.argsort(s)[::-1][:n_best]
            top_e = np.argsort(e)[::-1][:n_best]
            for a in top_s:
                if offs[a] is None:
                    continue
                for b in top_e:
                    if b < a or b - a + 1 > max_answer_len or offs[b] is None:
                        continue
                    sc = s[a] + e[b]
                    if sc > best_score:
                        best_score, best = sc, ex["context"][offs[a][0]:offs[b][1]]
        if null_threshold is not None and null - best_score > null_threshold:
            best = ""
        preds[ex["id"]] = best
    return preds


# ---------------------------------------------------------------- official metric
def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, the articles a/an/the, and extra whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact(pred: str, gold: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(gold))


def f1(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not p or not g:  # v2.0: no-answer is right only when both are empty
        return float(p == g)
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


def score(examples: list[dict], preds: dict[str, str]) -> dict:
    """EM and F1 in percent, max over the gold answers ([""] for an unanswerable question)."""
    em = f = 0.0
    for ex in examples:
        golds = ex["answers"] or [""]
        p = preds.get(ex["id"], "")
        em += max(exact(p, g) for g in golds)
        f += max(f1(p, g) for g in golds)
    n = max(1, len(examples))
    return {"exact": 100 * em / n, "f1": 100 * f / n}


def evaluate(model, tokenizer, examples: list[dict], feats: dict, bs: list[dict], order: list[int], device="cpu",
             version: str = "v1", n_best: int = 20, max_answer_len: int = 30, null_threshold: float = 0.0,
             progress: bool = False) -> dict:
    fl = logits(model, bs, order, device, progress)
    preds = postprocess(examples, feats, fl, n_best, max_answer_len, null_threshold if version == "v2" else None)
    return score(examples, preds)


def train_items(task_cfg: dict, tokenizer, data_dir: str, recipe: dict) -> tuple[list[dict], str]:
    """Tokenized fine-tuning windows with answer positions, and the split's label."""
    import random

    ex = split(load_examples(task_cfg["version"], data_dir), "train")
    if recipe.get("train_limit"):
        ex = random.Random(0).sample(ex, min(len(ex), int(recipe["train_limit"])))
    f = features(tokenizer, ex, recipe["max_len"], recipe.get("stride", 128), train=True)
    return [{**inp, "start_positions": s, "end_positions": e}
            for inp, s, e in zip(f["inputs"], f["start"], f["end"])], "dev-first-articles"


class SquadTask(Task):
    """SQuAD: EM/F1 of a QA model on the held-out dev articles (or all of dev with ``eval_all``);
    calibration on the first window of ``calib`` questions of the training articles."""

    has_labels = True

    def __init__(self, cfg: dict, tok, setting: Setting):
        super().__init__(cfg, tok, setting)
        n, stride = int(cfg["max_len"]), int(cfg["stride"])
        allex = load_examples(cfg["version"], setting.data_dir)
        ex = allex if cfg.get("eval_all") else split(allex, "eval")
        self.ex = ex[: cfg["eval_limit"]] if cfg.get("eval_limit") else ex
        self.feats = features(tok, self.ex, n, stride)
        self.bs, self.order = batches(tok, self.feats, int(cfg["eval_batch_size"]))
        self.train = split(allex, "train")
        self.picked = sample(self.train, setting.calib, setting.seed, "questions", "the SQuAD training part")

    def _first_windows(self, train: bool, ex: list | None = None) -> list[dict]:
        ex = self.picked if ex is None else ex
        f = features(self.tok, ex, int(self.cfg["max_len"]), int(self.cfg["stride"]), train=train)
        first = [f["example"].index(j) for j in range(len(ex))]
        if not train:
            return [f["inputs"][i] for i in first]
        return [{**f["inputs"][i], "start_positions": f["start"][i], "end_positions": f["end"][i]} for i in first]

    @property
    def cost_seqlen(self) -> int:
        ins = self.feats["inputs"]
        return max(1, round(sum(len(i["input_ids"]) for i in ins) / max(1, len(ins))))

    def _batched(self, items: list[dict], size: int) -> list[dict]:
        return [collate(items[i:i + size], self.tok.pad_token_id) for i in range(0, len(items), size)]

    def calibration(self) -> list[dict]:
        return self._batched(self._first_windows(False), self.setting.calib_batch_size)

    def labelled(self, n: int | None = None) -> list[dict]:
        ex = draw(self.train, n, self.setting.seed, self.picked)
        return self._batched(self._first_windows(True, ex), int(self.cfg["label_batch_size"]))

    def evaluate(self, model, device) -> dict:
        c = self.cfg
        r = evaluate(model, self.tok, self.ex, self.feats, self.bs, self.order, device, c["version"], int(c["n_best"]),
                     int(c["max_answer_len"]), float(c["null_threshold"]), progress=True)
        return {f"{k}_{c['datasets'][0]}": v for k, v in r.items()} | {
            "eval_split": "dev" if c.get("eval_all") else "dev-heldout", "eval_questions": len(self.ex)}


TASK = SquadTask
