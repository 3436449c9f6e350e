"""The analysis command (stat_exp/analyze.py): spectra from the Gram equal the singular values of the stacked
activations, ID curves run from 1 to 0, the residual-stream errors equal the model's own hidden states, and
bad input is one line."""
import json
import subprocess
import sys

import pytest
import torch

from stat_exp.adapters import adapter_for
from stat_exp.analyze import analyze, id_curve, residual_errors
from stat_exp.engine.models import load
from stat_exp.finetune import task_model
from stat_exp.pipeline import build_task

from conftest import ROOT, compose, need_data


def _cfg(tmp_path, *extra):
    need_data("wikitext2/wiki.test.raw", "c4/c4-train.00000-of-01024.first1041.jsonl")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return hydra_compose(config_name="analyze", overrides=[
            "model=tiny_llama_gqa", "debug=fast", f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}/c",
            *extra])


def _consumer_inputs(cfg):
    """Z of every site, stacked over the calibration tokens, by hooks on the consumers of a fresh dense model."""
    model, _ = load(task_model(cfg, "cpu"))
    adapter = adapter_for(model.config)
    zs, handles = {}, []
    for li, layer in enumerate(adapter.layers(model)):
        for kind, site in adapter.sites(layer).items():
            def hook(_m, args, key=(li, kind)):
                zs.setdefault(key, []).append(args[0].reshape(-1, args[0].shape[-1]).double())
            handles.append(site.consumer_linear.register_forward_pre_hook(hook))
    with torch.no_grad():
        for batch in build_task(cfg).calibration():
            model(**batch)
    for h in handles:
        h.remove()
    return {k: torch.cat(v) for k, v in zs.items()}


def test_spectrum_from_gram_equals_svdvals_of_activations(tmp_path):
    cfg = _cfg(tmp_path, "analyze.methods=[]")
    res = analyze(cfg)
    zs = _consumer_inputs(cfg)
    assert len(res["layers"]) == 2 and set(res["layers"][0]) == {"attn", "ffn"}
    for (li, kind), Z in zs.items():
        got, ref = torch.tensor(res["layers"][li][kind]["sigma"], dtype=torch.float64), torch.linalg.svdvals(Z)
        assert got.shape == ref.shape
        assert torch.allclose(got, ref, atol=1e-4 * float(ref[0]), rtol=0), (li, kind)
        e = torch.tensor(res["layers"][li][kind]["id_error"])
        assert e[0] == pytest.approx(1) and e[-1] == pytest.approx(0, abs=1e-6)
        assert bool((e[1:] <= e[:-1] + 1e-9).all())  # keeping more pivots never costs more
    out = json.loads((tmp_path / "analysis.json").read_text())  # outside Hydra: paths.output_dir
    assert out["layers"][0]["ffn"]["sigma"] == res["layers"][0]["ffn"]["sigma"]
    assert (tmp_path / "spectrum.png").stat().st_size > 0 and (tmp_path / "id_error.png").exists()


def test_id_curve_of_a_known_error():
    assert id_curve(torch.tensor([4.0, 1.0, 0.0])).tolist() == [1.0, 0.5, 0.0]
    assert id_curve(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_residual_errors_match_the_models_hidden_states(tmp_path):
    cfg = _cfg(tmp_path)
    dense, _ = load(task_model(cfg, "cpu"))
    pruned, _ = load(task_model(cfg, "cpu"))
    with torch.no_grad():
        pruned.model.layers[0].mlp.down_proj.weight.mul_(0.5)
    adapter = adapter_for(dense.config)
    batches = build_task(cfg).heldout(2)
    assert len(batches) == 2
    errs = residual_errors(dense, pruned, adapter, batches, "cpu")
    assert residual_errors(dense, dense, adapter, batches, "cpu") == [0.0, 0.0]
    with torch.no_grad():
        hd = [dense(**b, output_hidden_states=True).hidden_states for b in batches]
        hp = [pruned(**b, output_hidden_states=True).hidden_states for b in batches]
    # hidden_states[1] is layer 0's output (the last entry is after the final norm, so compare layer 0)
    num = sum(float((p[1] - d[1]).square().sum()) for d, p in zip(hd, hp))
    den = sum(float(d[1].square().sum()) for d in hd)
    assert errs[0] == pytest.approx((num / den) ** 0.5, rel=1e-5) and errs[0] > 0


def test_propagation_lines_per_method(tmp_path):
    res = analyze(_cfg(tmp_path, "analyze.methods=[stat,stat_nocorr]", "analyze.budget=1.0"))
    for name in ("stat", "stat_nocorr"):
        assert res["propagation"]["errors"][name] == pytest.approx([0.0, 0.0], abs=1e-5)  # budget 1.0 = identity
    res = analyze(_cfg(tmp_path, "analyze.methods=[stat,stat_nocorr]", "analyze.budget=0.5"))
    errs = res["propagation"]["errors"]
    assert all(e > 0 for e in errs["stat"]) and errs["stat"] != errs["stat_nocorr"]
    assert (tmp_path / "propagation.png").exists()


def test_bad_analysis_input_is_one_line(tmp_path):
    for args, msg in ((["analyze.budget=1.5"], "analyze.budget=1.5 is outside (0, 1]"),
                      (["analyze.budgte=0.5"], "did you mean 'analyze.budget'"),
                      (["analyze.methods=[nope]"], "unknown method 'nope'"),
                      (["method.options.keep_from=flap"], "drop keep_from")):
        r = subprocess.run([sys.executable, "-m", "stat_exp.analyze", "model=tiny_llama", "debug=fast",
                            f"paths.output_dir={tmp_path}", *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
