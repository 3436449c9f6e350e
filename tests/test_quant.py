"""Weight-only quantization after pruning (stat_exp/engine/quant.py): quanto's int8 equals a per-row absmax
reference, int4 stays within half a step of its group's min-max grid with the documented group sizes, bytes
shrink as stated, a quantized pruned model saves and reloads with identical logits, and the pipeline's rows
carry the quantization."""
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import stat_exp
from stat_exp.adapters import adapter_for
from stat_exp.engine import quant
from stat_exp.errors import UserError
from stat_exp.engine.models import tiny_model

from conftest import compose, need_data, outputs

TEXTS = ["the quick brown fox jumps over the lazy dog " * 4, "pack my box with five dozen liquor jugs " * 4,
         "how vexingly quick daft zebras jump " * 4, "sphinx of black quartz judge my vow " * 4]


def _wide():
    """A random Llama whose widths exercise quanto's group rule: 256 → groups of 128, a pruned-like 1234 → none."""
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=256, intermediate_size=1234, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=300)
    return LlamaForCausalLM(cfg).eval()


def _linears(model):
    return {n: m for n, m in model.model.layers.named_modules() if isinstance(m, torch.nn.Linear)}


def test_int8_equals_per_row_absmax_reference():
    model = _wide()
    ref_w = {n: m.weight.detach().clone() for n, m in _linears(model).items()}
    x = torch.randint(0, 300, (2, 24))
    info = quant.quantize(model, adapter_for(model.config), 8)
    assert info["quant"] == "int8" and info["quant_linears"] == 14 and info["quant_grouped"] == 0
    fp = _wide()
    for n, m in _linears(fp).items():
        w = ref_w[n]
        s = w.abs().amax(dim=1, keepdim=True) / 127
        ref = torch.clamp(torch.round(w / s), -127, 127) * s
        got = _linears(model)[n].weight.dequantize()
        assert torch.allclose(got, ref, atol=1e-6, rtol=0), n
        m.weight.data.copy_(got)
    # the quantized model computes what its dequantized weights compute
    assert torch.allclose(outputs(model, x), outputs(fp, x), atol=1e-4, rtol=1e-4)


def test_int4_group_sizes_and_error_bound():
    model = _wide()
    ref_w = {n: m.weight.detach().clone() for n, m in _linears(model).items()}
    info = quant.quantize(model, adapter_for(model.config), 4)
    assert info["quant_grouped"] == pytest.approx(12 / 14)  # down_proj (in 1234) has no group of 32..128
    for n, m in _linears(model).items():
        w, got = ref_w[n], m.weight.dequantize()
        g = m.weight_group_size
        assert g == (None if w.shape[1] == 1234 else 128), n
        groups = w.reshape(-1, g) if g else w
        step = (groups.amax(1) - groups.amin(1)) / 15
        err = (got.reshape(groups.shape) - groups).abs().amax(1)
        assert bool((err <= step / 2 + 1e-5).all()), n


def test_bytes_shrink_as_stated():
    model = _wide()
    fp = quant.state_bytes(model)
    assert fp == sum(p.numel() * 4 for p in model.parameters())  # fp32, no persistent buffers in a Llama
    lin = sum(m.weight.numel() for m in _linears(model).values())
    b8 = quant.quantize(model, adapter_for(model.config), 8)["weight_bytes"]
    # int8 data (1 byte each) + one fp32 scale per row replace 4 bytes per weight
    assert fp - b8 >= 3 * lin - 4 * sum(m.out_features for m in _linears(model).values()) - 1024
    m4 = _wide()
    b4 = quant.quantize(m4, adapter_for(m4.config), 4)["weight_bytes"]
    assert b4 < b8 < fp


def test_quantized_pruned_model_saves_and_reloads(tmp_path):
    pytest.importorskip("accelerate")
    from optimum.quanto import QuantizedModelForCausalLM

    model, tok = tiny_model("llama", kv_heads=2, hidden=64, heads=4, ffn=96)
    pruned, _ = stat_exp.prune(model, tok, budget=0.6, calib=TEXTS, n_calib=4, seqlen=32)
    info = stat_exp.quantize(pruned, bits=4)
    x = torch.randint(0, 100, (2, 12))
    before = outputs(pruned, x)
    pruned.save_pretrained(tmp_path)
    qmap = json.loads((tmp_path / "quanto_qmap.json").read_text())
    assert len(qmap) == info["quant_linears"] and all(v["weights"] == "qint4" for v in qmap.values())
    back = QuantizedModelForCausalLM.from_pretrained(str(tmp_path))
    assert quant.state_bytes(back._wrapped) == info["weight_bytes"]
    assert torch.equal(outputs(back._wrapped, x), before)


def test_bad_quant_settings_are_one_line_errors():
    with pytest.raises(UserError, match="model.dtype=float32"):
        quant.check(8, torch.bfloat16, "cpu")
    with pytest.raises(UserError, match="quant=int8"):
        quant.check(3, torch.float32, "cpu")
    quant.check(None, torch.bfloat16, "cpu")
    quant.check(4, torch.bfloat16, "cuda")


def test_pipeline_rows_carry_the_quantization(tmp_path):
    from stat_exp.pipeline import run_experiment

    need_data("wikitext2/wiki.test.raw", "c4/c4-train.00000-of-01024.first1041.jsonl")
    common = ["model=tiny_llama_gqa", "debug=fast", "budget=[0.7]", f"paths.cache_dir={tmp_path}/cache"]
    plain = run_experiment(compose([*common, f"paths.output_dir={tmp_path}/fp"]))
    q8 = run_experiment(compose([*common, f"paths.output_dir={tmp_path}/q8", "quant=int8"]))
    assert [r["quant"] for r in plain] == ["none", "none"] and [r["quant"] for r in q8] == ["int8", "int8"]
    for a, b in zip(plain, q8):
        assert (a["method"], a["budget"], a["params"], a["flops_ratio"]) == (b["method"], b["budget"], b["params"],
                                                                            b["flops_ratio"])
        assert b["weight_bytes"] < a["weight_bytes"]
        assert b["ppl_wikitext2"] == pytest.approx(a["ppl_wikitext2"], rel=0.05)  # int8 barely moves a tiny model
        assert b["ppl_wikitext2"] != a["ppl_wikitext2"]
    from stat_exp.tracking import summary

    assert "weights MB" in summary(tmp_path / "q8") and "weights MB" not in summary(tmp_path / "fp")
