"""Recovery fine-tuning (recover=lora): merged = adapters, pruned shapes kept through save and load, the loss
drops, windows disjoint from calibration, one-line errors."""
import copy

import pytest
import torch
import transformers
from torch import nn

from conftest import compose, need_data
from stat_exp import methods
from stat_exp.adapters import get_adapter
from stat_exp.core.cost import CostModel
from stat_exp.engine.capture import capture_inputs
from stat_exp.engine.models import tiny_model
from stat_exp.errors import UserError
from stat_exp.pipeline import run_experiment
from stat_exp.recover import adapt, lora, targets
from stat_exp.tasks.lm import calibration_picks, corpus_windows, recovery_windows


def _pruned(budget=0.6):
    model, tok = tiny_model("llama", kv_heads=2)
    ad = get_adapter(model)
    x = torch.randint(4, 250, (8, 16), generator=torch.Generator().manual_seed(3))
    m = methods.build("stat", cache=False)
    m.calibrate(methods.Context(model, ad, CostModel("flops", 16)), capture_inputs(model, ad, [{"input_ids": x}]))
    pruned = copy.deepcopy(model)
    m.prune(pruned, budget)
    return pruned, ad


def _shapes(model):
    return {n: tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def _loss(model, x):
    with torch.no_grad():
        return float(model(input_ids=x, labels=x).loss)


def test_merged_model_equals_the_adapter_model():
    pruned, ad = _pruned()
    x = torch.randint(4, 250, (16, 16), generator=torch.Generator().manual_seed(5))
    peft_model, _ = adapt(pruned, ad, x, rank=4, steps=8, lr=1e-2)
    with torch.no_grad():
        want = peft_model(input_ids=x[:4]).logits
    assert any(float(p.abs().max()) > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)  # trained
    merged = peft_model.merge_and_unload()
    with torch.no_grad():
        got = merged(input_ids=x[:4]).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not any("lora" in n for n, _ in merged.named_parameters())


def test_recovery_lowers_the_loss_and_keeps_the_pruned_shapes():
    pruned, ad = _pruned()
    shapes = _shapes(pruned)
    x = torch.tensor([5, 9, 17, 33] * 4).repeat(32, 1)  # a periodic text: learnable, unlike random tokens (log V)
    before = _loss(pruned, x)
    merged, info = lora(pruned, ad, x, rank=8, steps=32, lr=1e-2)
    assert _loss(merged, x) < 0.85 * before and info["recover_loss_end"] < info["recover_loss_start"]
    assert _shapes(merged) == shapes and info["recover_modules"] == len(targets(merged, ad)) > 0


def test_recovery_windows_are_disjoint_from_calibration():
    need_data("c4/c4-train.00000-of-01024.first1041.jsonl")
    _, tok = tiny_model("llama")
    all_w = corpus_windows(tok, "c4", 64, "data")
    calib = {tuple(all_w[i].tolist()) for i in calibration_picks(len(all_w), 16, 0, "c4", 64)}
    rec = recovery_windows(tok, "c4", 32, 16, 64, 0, "data")
    assert len(rec) == 32 and not calib & {tuple(w.tolist()) for w in rec}
    with pytest.raises(UserError, match="lower recover.steps"):
        recovery_windows(tok, "c4", len(all_w), 16, 64, 0, "data")


def test_pipeline_recovery_rows_and_saved_model(tmp_path):
    need_data("wikitext2/wiki.test.raw", "c4/c4-train.00000-of-01024.first1041.jsonl")
    cfg = compose(["model=tiny_llama_gqa", "debug=fast", f"paths.output_dir={tmp_path}", "budget=0.5",
                   f"paths.cache_dir={tmp_path}/cache", "recover=lora", "recover.steps=4", "recover.lr=0.01",
                   "save_model=true"])
    [dense, row] = run_experiment(cfg)
    assert row["recover"] == "lora" and row["recover_steps"] == 4 and row["recover_tokens"] == 4 * row["seqlen"]
    assert row["ppl_wikitext2_before_recovery"] > 1 and row["ppl_wikitext2"] != row["ppl_wikitext2_before_recovery"]
    assert row["achieved"] <= 0.5 + 1e-9 and "recover" not in dense
    m = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "pruned_stat_0.5")
    width = m.config.intermediate_size
    kept = [layer.mlp.down_proj.in_features for layer in m.model.layers]
    assert min(kept) < width  # the pruned shapes survive recovery, save and reload
    assert not any("lora" in n for n, _ in m.named_parameters())


def test_recover_on_a_task_without_a_corpus_names_the_fix():
    from stat_exp.config import validate

    with pytest.raises(UserError, match="not a language-model task: use recover=none"):
        validate(compose(["model=tiny_llama_gqa", "recover=lora", "task=sst2"]))
