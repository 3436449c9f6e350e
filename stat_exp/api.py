"""The Python entry: prune a model already in memory, evaluate any model, with the pipeline's own steps.

``prune`` runs what one (method, budget) row of ``python run.py`` runs (``pipeline.calibrate``,
``pipeline.prune_copy``, ``pipeline.measure``); ``evaluate`` runs a task's ``evaluate`` (``conf/task/``).

=================  ===========================================================================
argument           meaning
=================  ===========================================================================
``budget``         fraction of the layers' FLOPs (``budget_kind="params"``: parameters) kept, in (0, 1]
``calib``          calibration text: a corpus name (``"c4"``, ``"wikitext2"``, ``"ptb"``: windows of
                   ``seqlen`` tokens from its train split), a list of strings or a ``datasets.Dataset``
                   (its ``text`` column; each text truncated to ``seqlen`` tokens)
``n_calib``        number of calibration sequences (texts beyond it are sampled with ``seed``)
``seqlen``         calibration window; also the length attention FLOPs are priced at
``data_dir``       local corpora (default ``$STAT_EXP_DATA`` or ``data/``; missing files: the HF hub)
``bos``            ``evaluate``: BOS convention of perplexity windows (auto | none | corpus | window)
``options``        the method's options (``conf/method/<method>.yaml``), e.g. ``correction="none"``
``bits``           ``quantize``: 8 or 4, weight-only (optimum-quanto), in place, after pruning
=================  ===========================================================================
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from . import methods, tasks
from .adapters import adapter_for
from .core.cost import CostModel
from .core.plan import PrunePlan
from .data import collate
from .engine.card import card_info
from .engine.placement import on_device
from .errors import UserError
from .tasks.lm import calibration_windows

CONF = Path(__file__).resolve().parents[1] / "conf"


@dataclass
class Report:
    """What ``prune`` did: the plan, what the pruned model keeps, and the seconds each stage took."""

    plan: PrunePlan
    method: str
    budget: float
    budget_kind: str
    achieved: float        # kept fraction of the constrained quantity (≤ budget)
    flops_ratio: float     # layer FLOPs kept
    params_ratio: float    # parameters kept (whole model)
    params: int
    timings: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        t = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
        return (f"{self.method} at {self.budget:g} ({self.budget_kind}): achieved {self.achieved:.4f}, "
                f"FLOPs kept {self.flops_ratio:.4f}, params kept {self.params_ratio:.4f} ({self.params:,}); {t}")


def load(model: str, head: str = "causal_lm", dtype: str | None = None) -> tuple[nn.Module, Any]:
    """(model in eval mode on the CPU, tokenizer). ``model``: a name in ``conf/model/`` (``"smollm2_135m"``),
    a hub id or a local directory; ``head``: causal_lm | base | seq_cls | qa (a conf/model name brings its own)."""
    from omegaconf import OmegaConf

    from .engine.models import load as load_model

    path = CONF / "model" / f"{model}.yaml"
    cfg = OmegaConf.load(path) if path.exists() else OmegaConf.create({"name": model, "id": model, "head": head})
    loaded, tok = load_model(cfg, dtype)
    loaded.stat_source = {"name": str(cfg.name), "base_model": str(cfg.get("hub_id") or cfg.id)}  # for the card
    return loaded, tok


def _source(model: nn.Module) -> dict:
    """The card's ``base_model`` and ``model`` name: what ``load`` recorded, else what transformers did."""
    src = getattr(model, "stat_source", None)
    if src:
        return {"base_model": src["base_model"], "model": src["name"]}
    return {"base_model": getattr(model.config, "_name_or_path", None) or None, "model": type(model).__name__}


def _layers(model: nn.Module):
    """The model's layer list (streamed evaluation), or None for a family without an adapter (run whole)."""
    try:
        return adapter_for(model.config).layers(model)
    except UserError:
        return None


def _data_dir(data_dir: str | None) -> str:
    """``data_dir``, else ``$STAT_EXP_DATA``, else ``data``."""
    return data_dir or os.environ.get("STAT_EXP_DATA", "data")


def with_labels(batch: dict) -> dict:
    """``batch`` with next-token labels = its input ids, padding (attention_mask 0) set to -100 (no loss)."""
    labels = batch["input_ids"].clone()
    if "attention_mask" in batch:
        labels[batch["attention_mask"] == 0] = -100
    return {**batch, "labels": labels}


def _texts(calib: Sequence[str] | Any) -> list[str]:
    if hasattr(calib, "column_names"):  # a datasets.Dataset
        if "text" not in calib.column_names:
            raise UserError(f"the calibration Dataset has no 'text' column (columns: {calib.column_names})")
        calib = calib["text"]
    texts = [t for t in calib if isinstance(t, str) and t.strip()]
    if not texts:
        raise UserError("calib holds no non-empty strings; pass texts, a Dataset with a 'text' column, or 'c4'")
    return texts


def calibration_batches(tokenizer, calib, n_calib: int, seqlen: int, seed: int = 0, batch_size: int = 4,
                        data_dir: str | None = None) -> list[dict]:
    """Model-input batches of ``n_calib`` calibration sequences (see the module table for ``calib``)."""
    data_dir = _data_dir(data_dir)
    if isinstance(calib, str):
        x = calibration_windows(tokenizer, calib, n_calib, seqlen, seed, data_dir)
        return [{"input_ids": b} for b in x.split(batch_size)]
    texts = _texts(calib)
    if len(texts) > n_calib:
        texts = tasks.sample(texts, n_calib, seed, ordered=True)
    items = [{"input_ids": ids, "attention_mask": [1] * len(ids)}
             for ids in tokenizer(texts, truncation=True, max_length=seqlen)["input_ids"]]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return [collate(items[i: i + batch_size], pad) for i in range(0, len(items), batch_size)]


def prune(model: nn.Module, tokenizer, budget: float = 0.5, calib="c4", *, method: str = "stat",
          n_calib: int = 32, seqlen: int = 1024, seed: int = 0, budget_kind: str = "flops",
          device: str | None = None, batch_size: int = 4, data_dir: str | None = None,
          attn_units: str = "kv_group", **options) -> tuple[nn.Module, Report]:
    """A physically smaller copy of ``model`` keeping ``budget`` of its layer FLOPs, and its ``Report``.

    ``model`` (a Hugging Face model of a supported family) is left as it was. The pruned model saves with
    ``save_pretrained`` (weights, ``modeling_stat.py``, an ``auto_map`` and a model card holding the scores
    ``evaluate`` measured on it and on ``model``) and reloads with ``from_pretrained(dir, trust_remote_code=True)``. Methods that need labels (``kwon``) get the
    calibration windows with the next-token loss. ``attn_units="query_head"`` prunes single query heads under
    grouped-query attention (a KV head goes when the last query head reading it does).
    """
    from .engine.surgery import attention_units, shared_copy
    from .pipeline import calibrate, measure, prune_copy, reference, seed_everything

    if not 0 < budget <= 1:
        raise UserError(f"budget={budget} is outside (0, 1]; pass the fraction of layer {budget_kind} to keep")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    seed_everything(seed)
    adapter, cost = adapter_for(model.config), CostModel(budget_kind, seqlen)
    if attn_units != "kv_group":  # split the groups of a copy: ``model`` stays as it was
        model = attention_units(shared_copy(model), attn_units, adapter)
    t = time.perf_counter()
    batches = calibration_batches(tokenizer, calib, n_calib, seqlen, seed, batch_size, data_dir)
    cls, resolved = methods.resolve(method, options)
    labelled = [with_labels(b) for b in batches] if cls.wants_labels(resolved) else None
    from .engine.capture import capture_inputs

    model.eval()
    cap = capture_inputs(model, adapter, batches, device)
    timings = {"capture_s": time.perf_counter() - t}
    t = time.perf_counter()
    ctx = methods.Context(model, adapter, cost, device, seed, labelled=labelled)
    m = calibrate(method, options, ctx, cap)
    timings["calibrate_s"] = time.perf_counter() - t
    pruned, plan, spent = prune_copy(m, model, budget)
    kept = measure(adapter, pruned, cost, reference(adapter, model, cost), method, budget)
    source = calib if isinstance(calib, str) else "texts given to stat_exp.prune"
    pruned.stat_scores = {}  # the copy must not inherit the dense model's scores
    pruned.stat_card = card_info(
        model, pruned, adapter, kept, method=method, options=dict(m.options), calib=n_calib, calib_data=source,
        seqlen=seqlen, **_source(model),
        command=f"stat_exp.prune(model, tokenizer, budget={budget}, calib={calib!r:.60}, method={method!r}, "
                f"n_calib={n_calib}, seqlen={seqlen}, seed={seed}" + "".join(f", {k}={v!r}" for k, v in options.items())
                + ")", dense_scores=getattr(model, "stat_scores", {}))
    return pruned.eval(), Report(plan, method, budget, budget_kind, kept["achieved"], kept["flops_ratio"],
                                 kept["params_ratio"], kept["params"], {**timings, **spent})


def evaluate(model: nn.Module, tokenizer, task: str = "wikitext2", *, seqlen: int = 1024,
             windows: int | None = None, batch_size: int = 1, device: str | None = None,
             data_dir: str | None = None, bos: str = "auto") -> dict[str, float]:
    """The metrics of ``task`` (a name in ``conf/task/``: ``wikitext2``, ``ptb``, ``c4``, ``lm_all``, GLUE
    tasks for a model fine-tuned on them, ...) for ``model``: e.g. ``{"ppl_wikitext2": 28.5, ...}``.
    ``windows`` limits perplexity to the first windows of ``seqlen`` tokens (None: the papers' full split)."""
    from omegaconf import OmegaConf

    data_dir = _data_dir(data_dir)
    path = CONF / "task" / f"{task}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise UserError(f"unknown task '{task}'; choose one of: {known}")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t = tasks.build(cfg, tokenizer, tasks.Setting(data_dir, 0, 0, seqlen, eval_windows=windows,
                                                  eval_batch_size=batch_size, bos=bos,
                                                  model_type=getattr(model.config, "model_type", "")))
    model.eval()
    with on_device(model, _layers(model), device):
        scores = t.evaluate(model, device)
    model.stat_scores = {**getattr(model, "stat_scores", {}), **scores}  # what a saved model's card reports
    return scores


def quantize(model: nn.Module, bits: int = 8) -> dict:
    """Quantize ``model``'s layer Linears to ``bits`` (8 or 4) weight-only, in place (``conf/quant/``); returns
    ``{"quant", "quant_linears", "quant_grouped", "weight_bytes"}``. ``model.save_pretrained(dir)`` then also
    writes ``quanto_qmap.json``; reload with ``optimum.quanto.QuantizedModelForCausalLM.from_pretrained(dir)``
    after ``stat_exp.register()``."""
    from .engine import quant

    quant.check(bits, next(model.parameters()).dtype, str(next(model.parameters()).device))
    return quant.quantize(model, adapter_for(model.config), bits)
