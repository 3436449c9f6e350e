"""The model card (``README.md``) written beside every saved pruned model, in the Hugging Face format:
YAML front matter (``base_model``, ``library_name``, tags) and a body saying what the model is, how it was
made, how good it is next to the dense model, what each layer kept, and how to load and reproduce it."""
from __future__ import annotations

import json

from . import __version__


def layer_table(adapter, dense, pruned) -> list[str]:
    """Markdown rows: per layer, the units kept of each site (``kept/dense``), e.g. ``| 3 | 2/3 | 310/1536 |``."""
    kinds = list(adapter.sites(adapter.layers(dense)[0]))
    names = {"attn": "attention units kept", "ffn": "FFN neurons kept"}
    rows = [f"| layer | {' | '.join(names.get(k, k) for k in kinds)} |", "|---" * (1 + len(kinds)) + "|"]
    for i, (a, b) in enumerate(zip(adapter.layers(dense), adapter.layers(pruned))):
        sa, sb = adapter.sites(a), adapter.sites(b)
        rows.append(f"| {i} | " + " | ".join(f"{sb[k].n_units}/{sa[k].n_units}" for k in kinds) + " |")
    return rows


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def model_card(info: dict, table: list[str]) -> str:
    """The card's text. ``info``: base_model, method, options, budget, budget_kind, achieved, flops_ratio,
    params_ratio, params, calib, calib_data, seqlen, task, model, metrics ({name: (pruned, dense)}), command,
    auto_class (the Auto class that loads it); ``base_model`` enters the front matter when it is a hub id."""
    tags = ["stat-exp", "pruned", "structured-pruning", info["method"]]
    base = info.get("base_model")
    hub = base and base.count("/") == 1 and ":" not in base and not base.startswith((".", "/", "~"))
    front = ["---", *([f"base_model: {base}"] if hub else []), "library_name: transformers", "tags:",
             *[f"- {t}" for t in tags], "---", ""]
    auto = info.get("auto_class", "AutoModel")
    metrics = ["| metric | this model | dense |", "|---|---|---|",
               *[f"| {k} | {_fmt(p)} | {_fmt(d)} |" for k, (p, d) in info["metrics"].items()]]
    body = [
        f"# {base or info['model']} pruned with {info['method']} to {info['budget']:g} of its layer "
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
        f"## Quality (task `{info['task']}`)", "", *metrics, "",
        "## Units kept per layer", "", *table, "",
        "## Load", "", "```python", f"from transformers import {auto}, AutoTokenizer",
        f"model = {auto}.from_pretrained(path, trust_remote_code=True)  # runs the modeling_stat.py saved here",
        "# or, with stat-exp installed: `import stat_exp; stat_exp.register()`, then no trust_remote_code",
        "```", "",
        "## Reproduce", "", "```bash", info["command"], "```", ""]
    return "\n".join(front + body)
