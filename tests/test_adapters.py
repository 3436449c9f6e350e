"""Adapter contract, surgery (masked == sliced), zero-unit sites, save/load round trip (all families)."""
import copy
import os
import subprocess
import sys

import pytest
import torch
import transformers

from conftest import outputs
from stat_exp.adapters import get_adapter
from stat_exp.errors import UserError
from stat_exp.core.plan import PrunePlan, SitePlan
from stat_exp.core.units import rows_per_unit, unit_columns as unit_index
from stat_exp.engine.surgery import apply_plan


def _plan(model, keep_fn):
    ad = get_adapter(model)
    layers = []
    for li, layer in enumerate(ad.layers(model)):
        layers.append({k: SitePlan(keep_fn(li, k, s.n_units)) for k, s in ad.sites(layer).items()})
    return PrunePlan(layers)


def test_site_contract(tiny):
    model, _ = tiny
    ad = get_adapter(model)
    for layer in ad.layers(model):
        sites = ad.sites(layer)
        assert set(sites) == ({"ffn"} if ad.family == "olmo2" else {"attn", "ffn"})
        for site in sites.values():
            n = site.n_units
            assert n > 0
            for lin, (_, _, rows) in zip(site.producer_linears(), site.producers):
                assert lin.out_features == n * rows_per_unit(rows)
            assert site.consumer_linear.in_features == n * site.cols_per_unit


def test_gqa_unit_is_kv_group():
    from stat_exp.engine.models import tiny_model

    model, _ = tiny_model("llama", kv_heads=2, heads=4)
    site = get_adapter(model).sites(get_adapter(model).layers(model)[0])["attn"]
    assert site.n_units == 2 and site.cols_per_unit == 2 * 16


def test_masked_equals_sliced(tiny):
    model, _ = tiny
    plan = _plan(model, lambda li, k, n: [j for j in range(n) if (j + li) % 2 == 0])
    plan.layers[0]["ffn"].bias_delta = torch.randn(get_adapter(model).hidden_size(model))
    x = torch.randint(4, 250, (2, 12))
    masked = apply_plan(copy.deepcopy(model), plan, "mask")
    sliced = apply_plan(copy.deepcopy(model), plan, "slice")
    torch.testing.assert_close(outputs(sliced, x), outputs(masked, x), atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in sliced.parameters()) < sum(p.numel() for p in model.parameters())


def test_keep_all_is_identity(tiny):
    model, _ = tiny
    x = torch.randint(4, 250, (2, 12))
    pruned = apply_plan(copy.deepcopy(model), _plan(model, lambda li, k, n: list(range(n))))
    assert torch.equal(outputs(pruned, x), outputs(model, x))


def test_zero_units_run(tiny):
    model, _ = tiny
    pruned = apply_plan(copy.deepcopy(model), _plan(model, lambda li, k, n: [] if li == 1 else [0]))
    y = outputs(pruned, torch.randint(4, 250, (2, 12)))
    assert torch.isfinite(y).all()


def test_save_load_round_trip(tiny, tmp_path):
    model, _ = tiny
    plan = _plan(model, lambda li, k, n: list(range(0, n, 2)) if li == 0 else [n - 1])
    kind = "attn" if "attn" in plan.layers[1] else "ffn"
    plan.layers[1][kind].bias_delta = torch.ones(get_adapter(model).hidden_size(model))
    pruned = apply_plan(copy.deepcopy(model), plan)
    pruned.save_pretrained(tmp_path)
    auto = transformers.AutoModelForCausalLM if hasattr(pruned, "lm_head") else transformers.AutoModel
    reloaded = auto.from_pretrained(tmp_path).eval()
    assert type(reloaded).__name__.startswith("Stat")
    x = torch.randint(4, 250, (2, 12))
    assert torch.equal(outputs(reloaded, x), outputs(pruned, x))


def test_model_read_from_a_directory_saves_as_its_stat_type(tiny, tmp_path):
    """A config read from disk holds ``model_type`` itself: the pruned save must still say stat_<type>."""
    from stat_exp.engine.saving import remote_code

    model, _ = tiny
    model.save_pretrained(tmp_path / "dense")
    auto = transformers.AutoModelForCausalLM if hasattr(model, "lm_head") else transformers.AutoModel
    model = auto.from_pretrained(tmp_path / "dense").eval()
    base = model.config.model_type
    pruned = apply_plan(model, _plan(model, lambda li, k, n: [0]))
    assert pruned.config.model_type == pruned.config.to_dict()["model_type"] == f"stat_{base}"
    assert f'model_type = "stat_{base}"' in remote_code(pruned)[0]


def test_plain_class_load_refuses_pruned_checkpoint(tmp_path):
    """A pruned checkpoint must never be silently re-initialised by the plain class."""
    from stat_exp.engine.models import tiny_model

    model, _ = tiny_model("llama")
    apply_plan(model, _plan(model, lambda li, k, n: [0])).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):  # a size mismatch, never a re-init
        transformers.LlamaForCausalLM.from_pretrained(tmp_path)


def test_unit_index():
    assert unit_index([0, 2], 3).tolist() == [0, 1, 2, 6, 7, 8]


def test_fused_producer_rows():
    from stat_exp.core.units import producer_rows, unit_row_sum

    # 3 units, fused blocks of 2 and 1 rows per unit: [u0 u0 u1 u1 u2 u2 | u0 u1 u2]
    assert producer_rows([0, 2], (2, 1), 3).tolist() == [0, 1, 4, 5, 6, 8]
    assert producer_rows([1], 2, 3).tolist() == [2, 3]
    assert unit_row_sum(torch.arange(9.0), (2, 1)).tolist() == [0 + 1 + 6, 2 + 3 + 7, 4 + 5 + 8]


def test_unknown_family_is_one_line():
    class Cfg:
        model_type = "gpt_neo"

    class M:
        config = Cfg()

    with pytest.raises(UserError, match="no adapter for model_type 'gpt_neo'"):
        get_adapter(M())


def test_unit_sum_inverts_unit_columns():
    from stat_exp.core.units import unit_sum

    x = torch.arange(12.0)
    assert unit_sum(x, 3).tolist() == [3.0, 12.0, 21.0, 30.0]
    M = torch.arange(36.0).reshape(6, 6)
    U = unit_sum(M, 2)
    cols = unit_index([1], 2)
    assert U[1, 1] == M[cols][:, cols].sum() and U.shape == (3, 3)


def _env(tmp_path):
    return dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"))


_LOAD = """
import sys, torch, transformers
d, auto, trust = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if sys.argv[4] == "1":
    import stat_exp; stat_exp.register()
m = getattr(transformers, auto).from_pretrained(d, trust_remote_code=trust).eval()
with torch.no_grad():
    o = m(torch.load(d + "/x.pt"))
same = torch.equal(o.logits if hasattr(o, "logits") else o.last_hidden_state, torch.load(d + "/ref.pt"))
print(type(m).__name__, "stat_exp" in sys.modules, same)
"""


@pytest.mark.parametrize("trust,native", [(True, False), (False, True)], ids=["remote_code", "registered"])
def test_saved_model_loads_in_a_fresh_process(tiny, tmp_path, trust, native):
    """A pruned save loads with plain AutoModel….from_pretrained: through the modeling_stat.py saved beside
    its weights (trust_remote_code, stat_exp never imported) or natively after stat_exp.register()."""
    model, _ = tiny
    pruned = apply_plan(copy.deepcopy(model), _plan(model, lambda li, k, n: [] if li == 1 else [0, n - 1])).eval()
    x = torch.randint(4, 250, (2, 12))
    pruned.save_pretrained(tmp_path)
    torch.save(x, tmp_path / "x.pt")
    torch.save(outputs(pruned, x), tmp_path / "ref.pt")
    auto = "AutoModelForCausalLM" if hasattr(pruned, "lm_head") else "AutoModel"
    r = subprocess.run([sys.executable, "-c", _LOAD, str(tmp_path), auto, str(int(trust)), str(int(native))],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, env=_env(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == [type(pruned).__name__, str(native), "True"]


def test_saved_model_without_trust_names_the_fix(tmp_path):
    from stat_exp.engine.models import tiny_model

    model, _ = tiny_model("llama")
    apply_plan(model, _plan(model, lambda li, k, n: [0])).save_pretrained(tmp_path)
    code = "import transformers, sys; transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1])"
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, env=_env(tmp_path))
    assert r.returncode != 0 and "trust_remote_code=True" in r.stderr


GQA = [("llama", {}), ("qwen2", {}), ("mistral", {}), ("qwen3", {}), ("gemma2", {"layers": 3}),
       ("gemma3", {"layers": 3})]


@pytest.mark.parametrize("family,kw", GQA, ids=[f for f, _ in GQA])
def test_query_head_units_keep_the_function(family, kw):
    """Splitting KV groups into per-query-head units changes no logit, with and without a KV cache."""
    from conftest import make_tiny

    model, _ = make_tiny(family, kv_heads=2, **kw)
    split = copy.deepcopy(model)
    from stat_exp.engine.surgery import attention_units

    attention_units(split, "query_head")
    site = get_adapter(split).sites(get_adapter(split).layers(split)[0])["attn"]
    assert site.n_units == model.config.num_attention_heads and site.groups == [0, 0, 1, 1]
    x = torch.randint(4, 250, (2, 12))
    torch.testing.assert_close(outputs(split, x), outputs(model, x), atol=1e-6, rtol=1e-6)
    gen = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(split.generate(x, **gen), model.generate(x, **gen))


@pytest.mark.parametrize("keep,kv", [([0, 1, 2], [0, 0, 1]), ([0, 1], [0, 0]), ([1, 3], [0, 1]), ([3], [0])])
def test_query_heads_keep_only_the_kv_heads_they_read(keep, kv, tmp_path):
    """A KV head goes when the last query head reading it does; the map is saved and the save reloads."""
    from torch.utils.flop_counter import FlopCounterMode

    from conftest import make_tiny
    from stat_exp.core.cost import model_flops

    model, _ = make_tiny("llama", kv_heads=2, heads=4, attn_units="query_head")
    pruned = apply_plan(copy.deepcopy(model), _plan(model, lambda li, k, n: keep if k == "attn" else list(range(n))))
    a = get_adapter(pruned).layers(pruned)[0].self_attn
    d = a.head_dim
    assert a.k_proj.kv == a.v_proj.kv == kv and a.k_proj.out_features == d * len(set(kv))
    assert a.q_proj.out_features == a.o_proj.in_features == d * len(keep)
    pruned.set_attn_implementation("eager")
    x = torch.randint(4, 250, (1, 16))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        pruned(input_ids=x)
    assert model_flops(get_adapter(pruned), pruned, 16)["total"] * 16 == fc.get_total_flops()
    pruned.save_pretrained(tmp_path)
    assert pruned.config.stat_linears["model.layers.0.self_attn.k_proj"][3] == {"kv": kv, "head_dim": d}
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    reloaded.set_attn_implementation("eager")
    assert torch.equal(outputs(reloaded, x), outputs(pruned, x))


def test_query_head_units_refused_where_the_layout_is_fused():
    from conftest import make_tiny

    with pytest.raises(UserError, match="attn_units=kv_group"):
        make_tiny("phi3", kv_heads=2, attn_units="query_head")
    with pytest.raises(UserError, match="choose one of kv_group, query_head"):
        make_tiny("llama", attn_units="heads")
