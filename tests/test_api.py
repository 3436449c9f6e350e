"""The Python API: prune a model in memory with the pipeline's own steps (same rows as `run.py`), calibration
from strings, a Dataset or a corpus, a model card on every save, the end-of-run table, the console script."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

import stat_exp
from conftest import ROOT, compose, need_data
from stat_exp.engine.models import tiny_model
from stat_exp.errors import UserError
from stat_exp.pipeline import run_experiment

TEXTS = ["the quick brown fox jumps over the lazy dog " * 6, "pruning keeps what the next layer needs " * 5,
         "a b c d e f g h i j k l m n o p " * 4, "numbers 1 2 3 4 5 6 7 8 9 10 " * 6, "short"]


def _model():
    return tiny_model("llama", kv_heads=2, hidden=64, heads=4, ffn=96)


def test_prune_from_strings_leaves_the_input_model_alone():
    model, tok = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, report = stat_exp.prune(model, tok, budget=0.5, calib=TEXTS, n_calib=4, seqlen=32)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert report.achieved <= 0.5 + 1e-9 and report.flops_ratio <= 0.5 + 1e-9
    assert 0 < report.params_ratio < 1 and report.params == sum(p.numel() for p in pruned.parameters())
    assert {"capture_s", "calibrate_s", "prune_s"} <= set(report.timings)
    assert type(pruned).__name__.startswith("Stat") and "achieved" in str(report)


def test_prune_is_seeded_and_takes_a_dataset():
    datasets = pytest.importorskip("datasets")
    model, tok = _model()
    ds = datasets.Dataset.from_dict({"text": TEXTS})
    a = stat_exp.prune(model, tok, budget=0.6, calib=ds, n_calib=4, seqlen=32, seed=1)[1].plan.to_json()
    b = stat_exp.prune(model, tok, budget=0.6, calib=TEXTS, n_calib=4, seqlen=32, seed=1)[1].plan.to_json()
    assert a == b


@pytest.mark.parametrize("bad,match", [(dict(budget=1.5), "outside"), (dict(calib=["", " "]), "non-empty"),
                                       (dict(method="nope"), "unknown method")])
def test_prune_bad_input_is_one_line(bad, match):
    model, tok = _model()
    with pytest.raises(UserError, match=match):
        stat_exp.prune(model, tok, **{"calib": TEXTS, "seqlen": 32, **bad})


def test_api_rows_equal_the_command_lines(tmp_path):
    """prune + evaluate on the corpus give the row `run.py` logs for the same settings: one implementation."""
    need_data("wikitext2/wiki.test.raw", "c4/c4-train.00000-of-01024.first1041.jsonl")
    cfg = compose(["model=tiny_llama_gqa", "debug=fast", f"paths.output_dir={tmp_path}", "budget=0.5",
                   f"paths.cache_dir={tmp_path}/cache", "logger=none", f"paths.data_dir={ROOT / 'data'}"])
    rows = {r["method"]: r for r in run_experiment(cfg)}
    model, tok = stat_exp.load("tiny_llama_gqa")
    pruned, report = stat_exp.prune(model, tok, budget=0.5, calib="c4", n_calib=cfg.calib, seqlen=cfg.seqlen,
                                    data_dir=str(ROOT / "data"))
    scores = stat_exp.evaluate(pruned, tok, "wikitext2", seqlen=cfg.seqlen, windows=cfg.eval_windows,
                               data_dir=str(ROOT / "data"))
    assert scores["ppl_wikitext2"] == rows["stat"]["ppl_wikitext2"]
    assert report.flops_ratio == rows["stat"]["flops_ratio"] and report.params == rows["stat"]["params"]
    dense = stat_exp.evaluate(model, tok, "wikitext2", seqlen=cfg.seqlen, windows=cfg.eval_windows,
                              data_dir=str(ROOT / "data"))
    assert dense["ppl_wikitext2"] == rows["dense"]["ppl_wikitext2"]


def test_saved_model_has_a_model_card(tmp_path):
    need_data("wikitext2/wiki.test.raw", "c4/c4-train.00000-of-01024.first1041.jsonl")
    cfg = compose(["model=tiny_llama_gqa", "debug=fast", f"paths.output_dir={tmp_path}", "budget=0.5",
                   f"paths.cache_dir={tmp_path}/cache", "logger=none", "save_model=true"])
    rows = {r["method"]: r for r in run_experiment(cfg)}
    card = (tmp_path / "pruned_stat_0.5" / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: transformers" in front and "- stat-exp" in front
    assert f"| ppl_wikitext2 | {rows['stat']['ppl_wikitext2']:.4g} | {rows['dense']['ppl_wikitext2']:.4g} |" in card
    plan = json.loads((tmp_path / "pruned_stat_0.5" / "plan.json").read_text())
    for i, layer in enumerate(plan["keep"]):
        assert f"| {i} | {len(layer['attn'])}/2 | {len(layer['ffn'])}/96 |" in card
    assert "AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)" in card


def test_api_save_writes_a_card_with_the_scores_measured(tmp_path):
    need_data("wikitext2/wiki.test.raw")
    model, tok = _model()
    dense = stat_exp.evaluate(model, tok, "wikitext2", seqlen=32, windows=2, data_dir=str(ROOT / "data"))
    pruned, _ = stat_exp.prune(model, tok, budget=0.5, calib=TEXTS, n_calib=4, seqlen=32, correction="none")
    assert pruned.stat_scores == {}  # nothing inherited from the dense model
    ours = stat_exp.evaluate(pruned, tok, "wikitext2", seqlen=32, windows=2, data_dir=str(ROOT / "data"))
    pruned.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert f"| ppl_wikitext2 | {ours['ppl_wikitext2']:.4g} | {dense['ppl_wikitext2']:.4g} |" in card
    assert "correction='none'" in card and "4 sequences of 32 tokens from `texts given to stat_exp.prune`" in card


def test_console_script_is_the_same_app():
    exe = shutil.which("stat-exp")
    assert exe, "the stat-exp console script is not installed (pip install -e .)"
    r = subprocess.run([exe, "budget=1.5"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: budget=1.5 is outside (0, 1]; pass the fraction of FLOPs kept, e.g. budget=0.5"]


def test_progress_logs_one_closing_line(caplog):
    from stat_exp.progress import progress

    with caplog.at_level("INFO", logger="stat_exp"):
        assert list(progress(range(3), "demo", "window")) == [0, 1, 2]
        assert list(progress(range(2), "fisher", "batch")) == [0, 1]
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["demo: 3 windows", "fisher: 2 batches"]


def test_labelled_batches_mask_padding():
    from stat_exp.api import calibration_batches, with_labels

    _, tok = _model()
    batches = calibration_batches(tok, ["a b c d e f g h", "ab"], n_calib=2, seqlen=16, batch_size=2)
    b = with_labels(batches[0])
    pad = b["attention_mask"] == 0
    assert bool(pad.any()) and bool((b["labels"][pad] == -100).all())
    assert torch.equal(b["labels"][~pad], b["input_ids"][~pad])
