"""Text corpora for calibration and perplexity: local files under ``data_dir`` first, the HF hub for
online users. Layouts (paths under the data directory below) follow the pruning papers' recipes:

- wikitext2: ``"\\n\\n".join`` of the test rows (lines of wiki.test.raw, blank lines -> "")
- ptb:       ``" ".join`` of the lines of ptb.test.txt
- c4:        the first 1100 validation documents joined with " " (1025 are staged locally);
             callers keep the first 256 × seqlen tokens
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .errors import UserError
from .engine.hub import hub_reachable

log = logging.getLogger(__name__)

_LOCAL = {  # (corpus, split) -> path under data_dir
    ("wikitext2", "test"): "wikitext2/wiki.test.raw",
    ("wikitext2", "train"): "wikitext2/wiki.train.raw",
    ("ptb", "test"): "ptb/ptb.test.txt",
    ("ptb", "validation"): "ptb/ptb.valid.txt",
    ("ptb", "train"): "ptb/ptb.train.txt",
    ("c4", "validation"): "c4/c4-validation.00000-of-00008.first1025.jsonl",
    ("c4", "train"): "c4/c4-train.00000-of-01024.first1041.jsonl",
}
_HUB = {  # (corpus, split) -> load_dataset args
    ("wikitext2", "test"): (("wikitext", "wikitext-2-raw-v1"), {"split": "test"}, "text"),
    ("wikitext2", "train"): (("wikitext", "wikitext-2-raw-v1"), {"split": "train"}, "text"),
    ("ptb", "test"): (("ptb_text_only",), {"split": "test"}, "sentence"),
    ("ptb", "train"): (("ptb_text_only",), {"split": "train"}, "sentence"),
    ("c4", "validation"): (("allenai/c4",), {"data_files": {"validation": "en/c4-validation.00000-of-00008.json.gz"},
                                             "split": "validation"}, "text"),
    ("c4", "train"): (("allenai/c4",), {"data_files": {"train": "en/c4-train.00000-of-01024.json.gz"},
                                        "split": "train"}, "text"),
}
CORPORA = sorted({c for c, _ in _LOCAL})


def corpus_rows(corpus: str, split: str, data_dir: str) -> list[str]:
    """The rows of a corpus split: the local file under ``data_dir``, else the hub."""
    if (corpus, split) not in _LOCAL:
        raise UserError(f"unknown corpus/split '{corpus}/{split}'; corpora: {', '.join(CORPORA)}")
    path = Path(data_dir).expanduser() / _LOCAL[(corpus, split)]
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            return [json.loads(line)["text"] for line in text.splitlines() if line.strip()]
        if corpus == "wikitext2":
            return ["" if not line.strip() else line for line in text.splitlines(keepends=True)]
        return text.splitlines()
    if not hub_reachable():
        where = "does not exist" if not Path(data_dir).expanduser().exists() else f"has no {_LOCAL[(corpus, split)]}"
        raise UserError(f"data directory '{data_dir}' {where} and the hub is offline; set paths.data_dir=/path/to/data "
                        f"(or $STAT_EXP_DATA) or go online")
    from datasets import load_dataset

    args, kw, field = _HUB[(corpus, split)]
    log.info("loading %s/%s from the hub", corpus, split)
    return list(load_dataset(*args, **kw)[field])


def corpus_text(corpus: str, split: str, data_dir: str, max_docs: int | None = None) -> str:
    rows = corpus_rows(corpus, split, data_dir)
    if corpus == "wikitext2":
        return "\n\n".join(rows)
    if corpus == "c4":
        return " ".join(rows[: max_docs or 1100])
    return " ".join(rows)


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """(1, L) token ids of a long text, without the max-length warning."""
    old = tokenizer.model_max_length
    tokenizer.model_max_length = int(1e12)
    try:
        return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]], dtype=torch.long)
    finally:
        tokenizer.model_max_length = old


def collate(items: list[dict], pad_id: int) -> dict:
    """Pad a list of tokenized items into one batch: list fields are right-padded (``input_ids`` with
    ``pad_id``, the rest with 0); scalar fields (labels, answer positions) become a float or long tensor."""
    n = max(len(it["input_ids"]) for it in items)
    out = {}
    for k in items[0]:
        v = [it[k] for it in items]
        if isinstance(v[0], list):
            fill = pad_id if k == "input_ids" else 0
            out[k] = torch.tensor([x + [fill] * (n - len(x)) for x in v])
        else:
            out[k] = torch.tensor(v, dtype=torch.float if isinstance(v[0], float) else torch.long)
    return out
