"""Sentence-embedding fidelity (no fine-tuning needed): mean cosine similarity between the pruned
and the dense model's mean-pooled, L2-normalised embeddings of the same sentences (STS-B dev).
Calibration: ``calib`` STS-B train sentences; FLOPs at their measured mean length."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import Setting, Task, sample

STSB = {"train": "glue/STS-B/sts-train.tsv", "dev": "glue/STS-B/sts-dev.tsv"}


def stsb_sentences(data_dir: str, split: str = "dev") -> list[str]:
    """Both sentences of every STS-B pair (original STS-benchmark files: columns 6 and 7)."""
    path = Path(data_dir).expanduser() / STSB[split]
    if not path.exists():
        raise UserError(f"{path} not found; set paths.data_dir (or $STAT_EXP_DATA) to a directory with "
                        f"the GLUE files")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if len(cols) >= 7:
            out += [cols[5], cols[6]]
    return out


def batches(tokenizer, sentences: list[str], batch_size: int = 64, max_len: int = 128) -> list[dict]:
    return [dict(tokenizer(sentences[i:i + batch_size], padding=True, truncation=True, max_length=max_len,
                           return_tensors="pt")) for i in range(0, len(sentences), batch_size)]


def mean_length(bs: list[dict]) -> float:
    """Average number of real (non-padding) tokens per sentence: the FLOPs model's s."""
    return float(sum(b["attention_mask"].sum() for b in bs) / sum(len(b["attention_mask"]) for b in bs))


@torch.no_grad()
def embed(model, bs: list[dict], device="cpu") -> torch.Tensor:
    """(num_sentences, d) mean-pooled, L2-normalised last hidden states."""
    out = []
    for b in bs:
        b = {k: v.to(device) for k, v in b.items()}
        h = model(**b).last_hidden_state  # (B, T, d)
        m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
        out.append(F.normalize((h * m).sum(1) / m.sum(1).clamp_min(1), dim=-1).float().cpu())
    return torch.cat(out)


def cosine_to_reference(model, bs, reference: torch.Tensor, device="cpu") -> float:
    return float((embed(model, bs, device) * reference).sum(-1).mean())


class EmbedTask(Task):
    """Cosine to the dense model's embeddings of the STS-B dev sentences (reference set by ``prepare``)."""

    def __init__(self, cfg: dict, tok, setting: Setting):
        super().__init__(cfg, tok, setting)
        self.dev = batches(tok, stsb_sentences(setting.data_dir, "dev"), max_len=setting.seqlen)
        picked = sample(stsb_sentences(setting.data_dir, "train"), setting.calib, setting.seed, "sentences",
                        "STS-B train")
        self.cal = batches(tok, picked, setting.calib_batch_size, setting.seqlen)
        self.reference = None

    @property
    def cost_seqlen(self) -> int:
        return max(1, round(mean_length(self.cal)))

    def calibration(self) -> list[dict]:
        return self.cal

    def heldout(self, n: int) -> list[dict]:
        """The first ``n`` batches of STS-B dev sentences."""
        return self.dev[:n]

    def prepare(self, dense, device) -> None:
        dense.to(device)
        self.reference = embed(dense, self.dev, device)
        dense.to("cpu")

    def evaluate(self, model, device) -> dict:
        return {self.metric: cosine_to_reference(model, self.dev, self.reference, device)}


TASK = EmbedTask
