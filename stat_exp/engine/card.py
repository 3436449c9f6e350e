"""The model card (``README.md``) written beside every saved pruned model, in the Hugging Face format:
YAML front matter (``base_model``, ``library_name``, tags) and a body saying what the model is, how it was
made, how good it is next to the dense model, what each layer kept, and how to load and reproduce it.

A pruned model carries what its card needs as attributes: ``stat_card`` (``card_info``: set by whoever pruned
it) and ``stat_scores`` (the metrics measured on it: the pipeline's evaluation, or ``stat_exp.evaluate``);
its ``save_pretrained`` writes the card from them."""
from __future__ import annotations

import json

from .. import __version__


def unit_counts(adapter, model) -> dict[str, list[int]]:
    """Per site kind, the units each layer holds, e.g. ``{"attn": [2, 3], "ffn": [310, 1536]}``."""
    sites = [adapter.sites(layer) for layer in adapter.layers(model)]
    return {k: [s[k].n_units for s in sites] for k in sites[0]}


def layer_table(adapter, dense, pruned) -> list[str]:
    """Markdown rows: per layer, the units kept of each site (``kept/dense``), e.g. ``| 3 | 2/3 | 310/1536 |``."""
    a, b = unit_counts(adapter, dense), unit_counts(adapter, pruned)
    names = {"attn": "attention units kept", "ffn": "FFN neurons kept"}
    rows = [f"| layer | {' | '.join(names.get(k, k) for k in a)} |", "|---" * (1 + len(a)) + "|"]
    for i in range(len(adapter.layers(dense))):
        rows.append(f"| {i} | " + " | ".join(f"{b[k][i]}/{a[k][i]}" for k in a) + " |")
    return rows


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def card_info(dense, pruned, adapter, kept: dict, *, method: str, options: dict, calib, calib_data: str,
              seqlen: int, base_model: str | None, model: str, command: str, dense_scores: dict | None) -> dict:
    """What the card says of a model pruned from ``dense`` (``kept``: ``pipeline.measure``'s dict)."""
    return {**kept, "method": method, "options": options, "calib": calib, "calib_data": calib_data,
            "seqlen": seqlen, "base_model": base_model, "model": model, "command": command,
            "dense_scores": dict(dense_scores or {}), "table": layer_table(adapter, dense, pruned)}


def model_card(info: dict, scores: dict, auto: str) -> str:
    """The card's text from ``card_info``'s dict, the pruned model's ``scores`` and the ``auto`` class that loads
    it; ``base_model`` enters the front matter when it is a hub id."""
    tags = ["stat-exp", "pruned", "structured-pruning", info["method"]]
    base = info.get("base_model")
    hub = base and base.count("/") == 1 and ":" not in base and not base.startswith((".", "/", "~"))
    front = ["---", *([f"base_model: {base}"] if hub else []), "library_name: transformers", "tags:",
             *[f"- {t}" for t in tags], "---", ""]
    dense = info["dense_scores"]
    names = [k for k in {**dense, **scores} if not k.endswith("_s")]
    metrics = ["| metric | this model | dense |", "|---|---|---|",
               *[f"| {k} | {_fmt(scores.get(k))} | {_fmt(dense.get(k))} |" for k in names]]
    if not names:
        metrics = ["Not measured when saved: `stat_exp.evaluate(model, tokenizer, task=…)` before saving fills this."]
    body = [
        f"# {base if hub else info['model']} pruned with {info['method']} to {info['budget']:g} of its layer "
        f"{info['budget_kind']}", "",
        f"Structured pruning after training with stat-exp {__version__}: "
        "attention units and FFN neurons were removed from every layer and a correction was folded into the "
        "next layer; no retraining.", "",
        "## How it was made", "",
        f"- method: `{info['method']}`, options `{json.dumps(info['options'], sort_keys=True, default=str)}`",
        f"- budget: {info['budget']:g} of the layers' {info['budget_kind']} (achieved {info['achieved']:.4f}); "
        f"layer FLOPs kept {info['flops_ratio']:.4f}, parameters kept {info['params_ratio']:.4f} "
        f"({info['params']:,} parameters)",
        f"- calibration: {info['calib']} sequences of {info['seqlen']} tokens from `{info['calib_data']}`", "",
        "## Quality", "", *metrics, "",
        "## Units kept per layer", "", *info["table"], "",
        "## Load", "", "```python", f"from transformers import {auto}, AutoTokenizer",
        f"model = {auto}.from_pretrained(path, trust_remote_code=True)  # runs the modeling_stat.py saved here",
        "tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)  # it reads the model's config",
        "# or, with stat-exp installed: `import stat_exp; stat_exp.register()`, then no trust_remote_code",
        "```", "",
        "## Reproduce", "", "```bash", info["command"], "```", ""]
    return "\n".join(front + body)
