"""Shared fixtures: tiny random models of every family, offline environment, Hydra composition."""
import os
from pathlib import Path

import pytest
import torch

for k, v in dict(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                 WANDB_MODE="disabled", WANDB_SILENT="true", MPLBACKEND="Agg").items():
    os.environ.setdefault(k, v)

import stat_exp  # noqa: E402

stat_exp.register()  # the stat_* Auto classes, for from_pretrained of pruned saves
from stat_exp.engine.models import tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DATA = ROOT / "data"

# (id, family, head, tiny kwargs)
FAMILIES = [
    ("llama", "llama", "causal_lm", {}),
    ("llama_gqa", "llama", "causal_lm", {"kv_heads": 2}),
    ("qwen2_gqa", "qwen2", "causal_lm", {"kv_heads": 2}),
    ("mistral_gqa", "mistral", "causal_lm", {"kv_heads": 2}),
    ("qwen3_gqa", "qwen3", "causal_lm", {"kv_heads": 2}),
    ("gemma", "gemma", "causal_lm", {"kv_heads": 1}),
    ("gemma2_gqa", "gemma2", "causal_lm", {"kv_heads": 2, "layers": 3}),
    ("gemma3_gqa", "gemma3", "causal_lm", {"kv_heads": 2, "layers": 3}),
    # per-query-head attention units under GQA (attn_units=query_head: K/V gathered per query head)
    ("llama_gqa_qh", "llama", "causal_lm", {"kv_heads": 2, "attn_units": "query_head"}),
    ("gemma3_gqa_qh", "gemma3", "causal_lm", {"kv_heads": 2, "layers": 3, "attn_units": "query_head"}),
    ("phi3_gqa", "phi3", "causal_lm", {"kv_heads": 2}),
    ("olmo2_gqa", "olmo2", "causal_lm", {"kv_heads": 2}),
    ("opt", "opt", "causal_lm", {}),
    ("bert", "bert", "base", {}),
    ("distilbert", "distilbert", "base", {}),
]


def make_tiny(family, head="causal_lm", attn_units="kv_group", **kw):
    """``tiny_model`` with its attention units set (``attn_units``)."""
    from stat_exp.engine.surgery import attention_units

    model, tok = tiny_model(family, head, **kw)
    return attention_units(model, attn_units), tok


@pytest.fixture(params=FAMILIES, ids=[f[0] for f in FAMILIES])
def tiny(request):
    _, fam, head, kw = request.param
    return make_tiny(fam, head, **kw)


def one_unit(ctx) -> float:
    """The largest cost one unit can carry (with its group's shared K/V), as a fraction of the dense cost: a plan
    at budget b keeps at least b minus this (the other side of every budget test)."""
    return max(c + gc for c, gc in zip(ctx.costs, ctx.group_costs)) / ctx.dense_cost


def outputs(model, x, mask=None):
    with torch.no_grad():
        o = model(input_ids=x, attention_mask=mask)
    return o.logits if hasattr(o, "logits") else o.last_hidden_state


def need_data(*rel):
    """Skip (the reason shows in the summary line) when a data file is missing; under CI=true, fail instead."""
    for r in rel:
        if not (DATA / r).exists():
            msg = f"data/{r} not present: point data/ at a copy of the data directory"
            if os.environ.get("CI", "").lower() in ("1", "true"):
                pytest.fail(msg + " (CI runs every end-to-end test)")
            pytest.skip(msg)


def compose(overrides=()):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return _compose(config_name="config", overrides=list(overrides))
