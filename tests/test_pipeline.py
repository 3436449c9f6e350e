"""End to end on tiny models: rows, curve files, resume, seeding, W&B offline content, saved model."""
import json

import pytest
import torch
import transformers

from conftest import compose, need_data
from stat_exp.pipeline import run_experiment
from stat_exp.tracking import read_rows


def _cfg(tmp_path, *extra):
    need_data("wikitext2/wiki.test.raw", "c4/c4-train.00000-of-01024.first1041.jsonl")
    return compose(["model=tiny_llama_gqa", "debug=fast", f"paths.output_dir={tmp_path}", "budget=[0.8,0.5]",
                    f"paths.cache_dir={tmp_path}/cache", "baselines=[wanda_sp,magnitude,random]", *extra])


def test_end_to_end_writes_curve(tmp_path):
    rows = run_experiment(_cfg(tmp_path))
    methods = {(r["method"], r["budget"]) for r in rows}
    assert ("dense", 1.0) in methods and len(methods) == 1 + 4 * 2
    for r in rows:
        assert r["flops_ratio"] <= r["budget"] + 1e-9 and r["ppl_wikitext2"] > 1
    assert (tmp_path / "curve.png").stat().st_size > 1000
    header = (tmp_path / "curve.csv").read_text().splitlines()[0]
    assert "flops_ratio" in header and "ppl_wikitext2" in header
    assert len(read_rows(tmp_path / "results.jsonl")) == len(rows)


def test_rerun_skips_finished_rows_and_tolerates_torn_line(tmp_path):
    cfg = _cfg(tmp_path)
    first = run_experiment(cfg)
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"method": "stat", "bud')  # a run killed mid-write
    assert run_experiment(cfg) == []
    more = run_experiment(_cfg(tmp_path, "budget=[0.8,0.5,0.3]"))
    assert {(r["method"], r["budget"]) for r in more} == {(m, 0.3) for m in ("stat", "wanda_sp", "magnitude", "random")}
    assert len(read_rows(tmp_path / "results.jsonl")) == len(first) + 4


def test_same_seed_same_results(tmp_path):
    a = run_experiment(_cfg(tmp_path / "a", "baselines=[random]"))
    b = run_experiment(_cfg(tmp_path / "b", "baselines=[random]"))
    key = lambda rows: [(r["method"], r["budget"], r["ppl_wikitext2"], r["params"]) for r in rows]  # noqa: E731
    assert key(a) == key(b)


def test_save_model_reloads(tmp_path):
    dense, row = run_experiment(_cfg(tmp_path, "save_model=true", "baselines=[]", "budget=0.5"))
    d = tmp_path / "pruned_stat_0.5"
    m = transformers.AutoModelForCausalLM.from_pretrained(d)
    assert type(m).__name__ == "StatLlamaForCausalLM"
    plan = json.loads((d / "plan.json").read_text())
    assert plan["meta"]["method"] == "stat"
    # the row says what each layer kept: the plan's counts, the saved FFN widths, the dense row's full widths
    assert row["kept_units"]["ffn"] == [len(p["ffn"]) for p in plan["keep"]] == \
        [layer.mlp.down_proj.in_features for layer in m.model.layers]
    assert row["kept_units"]["attn"] == [len(p["attn"]) for p in plan["keep"]]
    assert dense["kept_units"]["ffn"] == [m.config.intermediate_size] * m.config.num_hidden_layers
    assert sum(row["kept_units"]["ffn"]) < sum(dense["kept_units"]["ffn"])
    assert torch.isfinite(m(input_ids=torch.tensor([[5, 6, 7]])).logits).all()



def test_keep_from_a_saved_plan_reproduces_its_run_and_refolds_with_other_statistics(tmp_path):
    """method.options.keep_from: the saved plan's units, folded with the new run's statistics (exact → the same
    scores; a sketch → the same units, another fold)."""
    _, first = run_experiment(_cfg(tmp_path / "a", "save_model=true", "baselines=[]", "budget=[0.5]"))
    plan = tmp_path / "a" / "pruned_stat_0.5" / "plan.json"
    _, same = run_experiment(_cfg(tmp_path / "b", "baselines=[]", "budget=[0.5]", f"method.options.keep_from={plan}"))
    assert same["keep_from"] == str(plan) and same["kept_units"] == first["kept_units"]
    assert same["ppl_wikitext2"] == first["ppl_wikitext2"] and same["flops_ratio"] == first["flops_ratio"]
    _, other = run_experiment(_cfg(tmp_path / "c", "baselines=[]", "budget=[0.5]", "sketch=countsketch",
                                   "sketch.dim=1x", "method.options.cache=false", f"method.options.keep_from={plan}"))
    assert other["kept_units"] == first["kept_units"] and other["sketch"] == "countsketch"
    assert other["ppl_wikitext2"] != first["ppl_wikitext2"]

def test_a_baselines_saved_plan_under_its_own_and_under_stats_compensation(tmp_path):
    """FLAP's saved plan kept by STAT with correction=mean is FLAP's row again; with STAT's fold (and a ridge)
    it is another, and method=stat_flap_units (keep_from=flap) gives that row in one run; rows say which compensation and ridge they used
    when not STAT's defaults."""
    rows = run_experiment(_cfg(tmp_path / "a", "save_model=true", "baselines=[flap]", "budget=[0.5]"))
    flap = next(r for r in rows if r["method"] == "flap")
    plan = tmp_path / "a" / "pruned_flap_0.5" / "plan.json"
    _, mean = run_experiment(_cfg(tmp_path / "b", "baselines=[]", "budget=[0.5]", f"method.options.keep_from={plan}",
                                  "method.options.correction=mean"))
    assert mean["correction"] == "mean" and "ridge" not in mean and mean["kept_units"] == flap["kept_units"]
    assert mean["ppl_wikitext2"] == pytest.approx(flap["ppl_wikitext2"], rel=1e-5)
    _, fold = run_experiment(_cfg(tmp_path / "c", "baselines=[]", "budget=[0.5]", f"method.options.keep_from={plan}",
                                  "method.options.ridge=0.01"))
    assert fold["ridge"] == 0.01 and "correction" not in fold and fold["kept_units"] == flap["kept_units"]
    assert fold["ppl_wikitext2"] != pytest.approx(flap["ppl_wikitext2"], rel=1e-3)
    _, one = run_experiment(_cfg(tmp_path / "d", "baselines=[]", "budget=[0.5]", "method=stat_flap_units",
                                 "+method.options.ridge=0.01"))  # FLAP's units in the same run: no saved plan
    assert one["method"] == "stat_flap_units" and one["keep_from"] == "flap" and one["kept_units"] == flap["kept_units"]
    assert one["ppl_wikitext2"] == pytest.approx(fold["ppl_wikitext2"], rel=1e-6)


def test_stat_choose_on_unseen_windows_reads_the_corpus_besides_the_calibration_windows(tmp_path, monkeypatch):
    """method=stat_choose (choose_on=unseen by default): the pipeline hands STAT windows of the calibration corpus that are
    none of the calibration windows (the task's ``unseen``), as many as the choice asks for; the row says which
    allocation won on them and every candidate's loss."""
    from stat_exp.tasks.lm import LMTask

    asked = []
    real = LMTask.unseen
    monkeypatch.setattr(LMTask, "unseen", lambda self, n, batch: asked.append((n, batch)) or real(self, n, batch))
    _, row = run_experiment(_cfg(tmp_path, "baselines=[]", "budget=[0.5]", "method=stat_choose"))  # unseen: the default
    assert asked == [(4, 4)]  # choose_batches=1 batch of calib_batch_size windows
    assert row["method"] == "stat_choose" and row["choose_on"] == "unseen" and row["choose_from"] == "greedy,flap"
    assert row["allocation_chosen"] == min(row["choice_loss"], key=row["choice_loss"].get)
    assert set(row["choice_loss"]) == {"greedy", "flap"} and row["flops_ratio"] <= 0.5 + 1e-9


def test_wandb_offline_holds_curve(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from wandb_reader import history, wait_complete

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = _cfg(tmp_path, "logger=wandb", "baselines=[]", "logger.group=smollm2/wikitext2_methods")
    rows = run_experiment(cfg)
    [f] = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    from wandb_reader import iter_records

    groups = {r.run.run_group for r in iter_records(wait_complete(f)) if r.WhichOneof("record_type") == "run"}
    assert groups == {"smollm2/wikitext2_methods"}  # the study's group, as the sweep scripts set it
    hist = history(f)
    # the metric-vs-FLOPs table (the line plot's data) is logged once per run, at its end
    assert sum("curve_table/path" in h for h in hist) == 1
    assert len(list(tmp_path.glob("wandb/offline-run-*/files/media/table/*.table.json"))) == 1
    logged = {(h.get("method"), round(h["flops_ratio"], 6)): h["ppl_wikitext2"] for h in hist if "flops_ratio" in h}
    want = {(r["method"], round(r["flops_ratio"], 6)): r["ppl_wikitext2"] for r in rows}
    assert set(logged) == set(want)  # every history row says which method made it
    assert sorted(logged.values()) == pytest.approx(sorted(want.values()))
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/table/*.table.json"))


def test_embedding_task_end_to_end(tmp_path):
    need_data("glue/STS-B/sts-dev.tsv", "glue/STS-B/sts-train.tsv")
    cfg = compose(["model=tiny_bert", "task=stsb_embed", "debug=fast", "calib=32", f"paths.output_dir={tmp_path}",
                   f"paths.cache_dir={tmp_path}/cache", "budget=[0.5]", "baselines=[flap]"])
    rows = run_experiment(cfg)
    dense = [r for r in rows if r["method"] == "dense"][0]
    assert dense["cos_stsb"] == pytest.approx(1.0, abs=1e-5)
    assert dense["seqlen"] < 64  # FLOPs at the measured mean sentence length, not the padded length
    for r in rows:
        assert -1 <= r["cos_stsb"] <= 1 + 1e-6 and r["flops_ratio"] <= r["budget"] + 1e-9


def test_report_regenerates_table_and_figure(tmp_path):
    from stat_exp import report

    run_experiment(_cfg(tmp_path / "run", "baselines=[random]"))
    report.main([str(tmp_path / "res"), str(tmp_path / "run"), "--metric", "ppl_wikitext2"])
    md = (tmp_path / "res" / "table.md").read_text()
    assert "| stat |" in md and "| random |" in md and "| dense |" in md
    assert (tmp_path / "res" / "curve.png").exists() and (tmp_path / "res" / "runs.csv").exists()
    # a study: its rows and recipe are stored, and the no-argument command rebuilds the same table from them
    assert len(read_rows(tmp_path / "res" / "results.jsonl")) == 5
    spec = json.loads((tmp_path / "res" / "study.json").read_text())
    spec.update(question="q?", answer="a.", protocol="p.", command="c")
    (tmp_path / "res" / "study.json").write_text(json.dumps(spec))
    (tmp_path / "res" / "table.md").write_text("edited by hand")
    report.main(["--root", str(tmp_path)])
    assert (tmp_path / "res" / "table.md").read_text() == md and "**Answer.** a." in (tmp_path / "res" / "README.md").read_text()
    assert "| [res](res/) | q? | a. |" in (tmp_path / "README.md").read_text()  # the index
    report.main([str(tmp_path / "res"), str(tmp_path / "run"), "--metric", "ppl_wikitext2"])  # again: merged, not doubled
    assert len(read_rows(tmp_path / "res" / "results.jsonl")) == 5
    # a study as a source (another study's runs beside new ones): its rows keep their runs and come once
    report.main([str(tmp_path / "both"), str(tmp_path / "res"), str(tmp_path / "run"), "--metric", "ppl_wikitext2"])
    both = read_rows(tmp_path / "both" / "results.jsonl")
    assert len(both) == 5 and {r["run"] for r in both} == {r["run"] for r in read_rows(tmp_path / "res" / "results.jsonl")}
    report.main([str(tmp_path / "only"), str(tmp_path / "run"), "--metric", "ppl_wikitext2", "--methods", "random"])
    md = (tmp_path / "only" / "table.md").read_text()
    assert "| random |" in md and "| dense |" in md and "| stat |" not in md


def test_parameter_budget(tmp_path):
    rows = run_experiment(_cfg(tmp_path, "budget_kind=params", "baselines=[flap]", "budget=[0.6]"))
    from stat_exp.engine.models import tiny_model
    from stat_exp.adapters import get_adapter

    model, _ = tiny_model("llama", kv_heads=2, layers=2, hidden=64, heads=4, ffn=96)
    layers = get_adapter(model).layers(model)
    dense_layer_params = sum(p.numel() for p in layers.parameters() if p.dim() == 2)
    others = sum(p.numel() for p in model.parameters()) - dense_layer_params
    added_biases = 2 * len(layers) * 64  # the fold may give each consumer a bias (not in the budget, like FLOPs)
    for r in rows:
        if r["method"] != "dense":
            assert (r["params"] - others - added_biases) / dense_layer_params <= 0.6 + 1e-6
            assert r["params"] < 0.8 * (dense_layer_params + others)


def test_report_tidy_csv_and_error_bars_over_seeds(tmp_path):
    import csv

    from stat_exp import report

    for s in (0, 1):
        run_experiment(_cfg(tmp_path / f"s{s}", "baselines=[random]", f"seed={s}", "budget=[0.5]"))
    report.main([str(tmp_path / "res"), str(tmp_path / "s0"), str(tmp_path / "s1")])  # --metric auto
    md = (tmp_path / "res" / "table.md").read_text()
    assert "seeds [0, 1], mean ± std" in md and "±" in md.split("| random |")[1].splitlines()[0]
    rows = list(csv.DictReader(open(tmp_path / "res" / "runs.csv")))
    assert set(rows[0]) == {*report.ID_COLS, "metric", "value"}
    keys = [(r["run"], r["method"], r["budget"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)) and {r["metric"] for r in rows} >= {"ppl_wikitext2"}
    assert (tmp_path / "res" / "curve.png").stat().st_size > 1000


def test_latency_is_measured_for_dense_and_pruned(tmp_path):
    rows = run_experiment(_cfg(tmp_path, "baselines=[]", "budget=[0.4]", "latency.enabled=true",
                               "latency.batch_size=2", "latency.repeats=3", "latency.warmup=1"))
    dense, pruned = rows
    assert dense["latency_ms"] > 0 and dense["speedup"] == 1.0 and pruned["latency_ms"] > 0
    assert pruned["latency_shape"] == [2, dense["seqlen"]] and pruned["speedup"] == pytest.approx(
        dense["latency_ms"] / pruned["latency_ms"])


def test_wandb_group_is_the_sweep_directory_in_a_multirun():
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from stat_exp.config import sweep_group

    assert sweep_group() is None  # not inside a Hydra app
    hc = HydraConfig.instance()
    try:
        for mode, want in ((RunMode.MULTIRUN, "2026-01-02_03-04-05"), (RunMode.RUN, None)):
            hc.cfg = OmegaConf.create({"hydra": {"mode": mode, "sweep": {"dir": "outputs/multirun/2026-01-02_03-04-05"},
                                                 "runtime": {"output_dir": "x"}}})
            assert sweep_group() == want
    finally:
        hc.cfg = None


def test_report_by_column_keeps_one_dense_row():
    from stat_exp.report import table

    rows = [{"task": "t", "method": "dense", "budget": 1.0, "calib": c, "seed": 0, "flops_ratio": 1.0, "ppl_x": 10.0}
            for c in (8, 16)]
    rows += [{"task": "t", "method": "stat", "budget": 0.5, "calib": c, "seed": 0, "flops_ratio": 0.5, "ppl_x": v}
             for c, v in ((8, 30.0), (16, 20.0))]
    md = table(rows, "ppl_x", by="calib")
    assert md.count("| dense |") == 1 and "| stat calib=8 | 30.00 (0.500) |" in md and "| stat calib=16 | 20.00" in md


def test_report_lines_split_by_a_number_come_in_numeric_order():
    from stat_exp.report import table

    rows = [{"task": "t", "method": "stat", "budget": 0.5, "calib": c, "seed": 0, "flops_ratio": 0.5, "ppl_x": 1.0}
            for c in (64, 8, 1024, 16, None)]
    lines = [ln.split(" |")[0] for ln in table(rows, "ppl_x", by="calib").splitlines() if ln.startswith("| stat")]
    assert lines == ["| stat calib=8", "| stat calib=16", "| stat calib=64", "| stat calib=1024", "| stat"]  # unset: no key


def test_report_best_of_picks_each_methods_better_granularity_per_budget():
    """best.md shows a method at its better attn_units per budget (lowest perplexity; highest accuracy), seeds
    averaged before comparing."""
    from stat_exp.report import best_of

    rows = [{"task": "t", "method": "dense", "budget": 1.0, "seed": 0, "flops_ratio": 1.0, "ppl_x": 10.0}]
    for units, b, seed, v in (("kv_group", 0.5, 0, 30.0), ("kv_group", 0.5, 1, 34.0), ("query_head", 0.5, 0, 33.0),
                              ("kv_group", 0.8, 0, 15.0), ("query_head", 0.8, 0, 12.0)):
        rows.append({"task": "t", "method": "flap", "budget": b, "attn_units": units, "seed": seed,
                     "flops_ratio": b, "ppl_x": v})
    md = best_of(rows, "ppl_x", "attn_units")
    assert "| flap | 12.00 (query_head, 0.800) | 32.00 (kv_group, 0.500) |" in md and "| dense | 10.00 | 10.00 |" in md
    acc = best_of([{**r, "accuracy_x": r["ppl_x"]} for r in rows], "accuracy_x", "attn_units")  # higher wins
    assert "| flap | 15.0000 (kv_group, 0.800) | 33.0000 (query_head, 0.500) |" in acc
    # another option that splits the table splits best.md too: never averaged into the default's line
    other = [{**r, "normalize": "median", "ppl_x": r["ppl_x"] * 3} for r in rows if r["method"] == "flap"]
    md = best_of(rows + other, "ppl_x", "attn_units", ["attn_units", "normalize"])
    assert "| flap | 12.00 (query_head, 0.800) | 32.00 (kv_group, 0.500) |" in md
    assert "| flap normalize=median | 36.00 (query_head, 0.800) | 96.00 (kv_group, 0.500) |" in md


def test_report_figure_splits_lines_as_the_table_does(monkeypatch):
    """A protocol key that splits the table (attn_units) splits the figure's lines too: two granularities are
    never averaged into one line with their spread drawn as seed error bars."""
    from stat_exp import report

    got = {}
    monkeypatch.setattr(report, "plot_lines", lambda path, lines, *a, **k: got.update(lines))
    rows = [{"task": "t", "method": "dense", "budget": 1.0, "seed": 0, "flops_ratio": 1.0, "ppl_x": 10.0}]
    rows += [{"task": "t", "method": "flap", "budget": 0.5, "attn_units": u, "seed": 0, "flops_ratio": 0.5,
              "ppl_x": v} for u, v in (("kv_group", 30.0), ("query_head", 20.0))]
    report.plot(None, rows, "ppl_x", ["attn_units"])
    assert got == {"flap attn_units=kv_group": ([0.5], [30.0], [0.0]),
                   "flap attn_units=query_head": ([0.5], [20.0], [0.0])}


def test_rows_log_the_constrained_quantity(tmp_path):
    """A params budget is checked and logged as the layers' parameter ratio (``achieved``), not FLOPs."""
    rows = run_experiment(_cfg(tmp_path, "budget_kind=params", "baselines=[flap]", "budget=[0.6]"))
    for r in rows:
        assert r["budget_kind"] == "params" and r["achieved"] <= r["budget"] + 1e-9
    flap = [r for r in rows if r["method"] == "flap"][0]
    assert flap["achieved"] != pytest.approx(flap["flops_ratio"], abs=1e-6)  # a different quantity at seqlen 64


def test_a_method_over_its_budget_fails_loudly(tmp_path, monkeypatch):
    from stat_exp.methods import CLASSES
    from stat_exp.methods.simple import Random

    class Greedy(Random):  # keeps every unit whatever the budget
        name = "random"

        def plan(self, budget):
            return self.new_plan([list(range(n)) for n in self.ctx.n_units], budget=budget)

    monkeypatch.setitem(CLASSES, "random", Greedy)
    with pytest.raises(RuntimeError, match="random overshot its budget: kept 1.000000 of the layers' flops"):
        run_experiment(_cfg(tmp_path, "baselines=[random]", "budget=[0.5]"))
    assert [r["method"] for r in read_rows(tmp_path / "results.jsonl")] == ["dense", "stat"]


def test_report_never_mixes_protocols_unless_pooled(tmp_path):
    """Runs that differ in calib (or windows) get one line per value; --pool calib averages them and says so."""
    import json

    from stat_exp import report

    for c, w, v in ((8, 10, 30.0), (16, 10, 20.0), (16, 40, 22.0)):
        d = tmp_path / f"c{c}w{w}"
        d.mkdir()
        rows = [{"task": "t", "method": m, "budget": b, "calib": c, "seed": 0, "flops_ratio": b, f"windows_x": w,
                 "metric": "ppl_x", "ppl_x": val} for m, b, val in (("dense", 1.0, 10.0 + w), ("stat", 0.5, v))]
        (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report.main([str(tmp_path / "split"), str(tmp_path / "c8w10"), str(tmp_path / "c16w10"), str(tmp_path / "c16w40")])
    md = (tmp_path / "split" / "table.md").read_text()
    assert md.startswith("Split by calib, windows_x.")
    assert "| stat calib=8 windows_x=10 | 30.00 (0.500) |" in md and "| stat calib=16 windows_x=40 | 22.00" in md
    assert "| dense windows_x=10 | 20.00 |" in md and "| dense windows_x=40 | 50.00 |" in md
    report.main([str(tmp_path / "pooled"), str(tmp_path / "c8w10"), str(tmp_path / "c16w10"), "--pool", "calib"])
    md = (tmp_path / "pooled" / "table.md").read_text()
    assert md.startswith("Nothing split; pooled over calib (--pool).") and "| stat | 25.00 ± 7.07 (0.500) |" in md


def test_budget_curve_peak_memory_is_dense_plus_one_pruned_model():
    """A curve of pruned copies costs each copy's own kept weights only: the resident-set peak above the dense
    model stays below one dense copy (a full copy per budget would exceed it), sampled from /proc."""
    import threading
    import time

    from stat_exp import methods
    from stat_exp.adapters import adapter_for
    from stat_exp.core.cost import CostModel
    from stat_exp.engine.models import tiny_model
    from stat_exp.pipeline import prune_copy

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    model, _ = tiny_model("llama", hidden=512, layers=8, heads=8, ffn=1536, vocab=1000)
    dense_bytes = sum(p.numel() * 4 for p in model.parameters())
    ctx = methods.Context(model, adapter_for(model.config), CostModel("flops", 64))
    method = methods.build("magnitude")
    method.calibrate(ctx, None)
    peak, stop = [rss()], threading.Event()
    base = peak[0]

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    t = threading.Thread(target=sample)
    t.start()
    own = []
    try:
        for b in (0.7, 0.5, 0.3):
            pruned, _, _ = prune_copy(method, model, b)
            shared = {p.data_ptr() for p in model.parameters()}
            own.append(sum(p.numel() * 4 for p in pruned.parameters() if p.data_ptr() not in shared))
            del pruned
    finally:
        stop.set()
        t.join()
    assert own[0] < 0.75 * dense_bytes  # the copy's own tensors: the kept layer weights only
    assert peak[0] - base < 0.9 * dense_bytes, (peak[0] - base, dense_bytes, own)


def test_bf16_end_to_end_on_a_tiny_model(tmp_path):
    """model.dtype=bfloat16: statistics in fp32/fp64, weights and saves in bf16, every method within budget."""
    import json

    import transformers

    rows = run_experiment(_cfg(tmp_path, "model.dtype=bfloat16", "budget=[0.6]", "save_model=true"))
    assert {r["method"] for r in rows} == {"dense", "stat", "wanda_sp", "magnitude", "random"}
    fp32 = {r["method"]: r for r in run_experiment(_cfg(tmp_path / "fp32", "budget=[0.6]"))}
    for r in rows:  # the same rows as fp32 on the same model, to bf16's precision
        assert r["flops_ratio"] <= r["budget"] + 1e-9
        assert r["ppl_wikitext2"] == pytest.approx(fp32[r["method"]]["ppl_wikitext2"], rel=0.02), r["method"]
    saved = tmp_path / "pruned_stat_0.6"
    assert json.loads((saved / "config.json").read_text())["dtype"] == "bfloat16"
    back = transformers.AutoModelForCausalLM.from_pretrained(saved)
    assert {p.dtype for p in back.parameters()} == {torch.bfloat16}


def test_auto_dtype_is_bf16_for_big_models(monkeypatch):
    from omegaconf import OmegaConf

    from stat_exp.engine import models

    small = OmegaConf.create({"id": "tiny://llama", "dtype": "auto"})
    big = OmegaConf.create({"id": "tiny://llama", "dtype": "auto", "tiny": {"hidden": 4096, "layers": 32,
                                                                            "ffn": 11008, "heads": 32}})
    for gpu in (False, True):  # a CPU stores bf16 too and computes each layer in fp32 (placement)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
        assert models.resolve_dtype(big) == "bfloat16" and models.resolve_dtype(small) == "float32"
    assert models.resolve_dtype(OmegaConf.create({"id": "x", "dtype": "float16"})) == "float16"


def test_query_head_units_end_to_end(tmp_path):
    """attn_units=query_head: the dense row is unchanged, every method fits its budget, rows say which units,
    and the save reloads with its query→KV maps."""
    group = run_experiment(_cfg(tmp_path / "g", "baselines=[]", "budget=[0.5]"))
    rows = run_experiment(_cfg(tmp_path / "q", "attn_units=query_head", "baselines=[flap,wanda_sp]",
                               "budget=[0.5]", "save_model=true"))
    assert rows[0]["method"] == "dense" and rows[0]["ppl_wikitext2"] == group[0]["ppl_wikitext2"]
    for r in rows:
        assert r["attn_units"] == "query_head" and r["flops_ratio"] <= r["budget"] + 1e-9
    m = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "q" / "pruned_stat_0.5")
    assert any(type(mod).__name__ == "GatheredLinear" for mod in m.modules())
    assert torch.isfinite(m(input_ids=torch.tensor([[5, 6, 7]])).logits).all()


def test_random_bf16_model_curve_saves_and_reloads(tmp_path):
    """The 7B rehearsal's path at a small size: model=llama2_7b_random narrowed (random bf16 weights drawn into a
    file and memory-mapped), STAT at two budgets with save_model=true, evaluation streamed in fp32 on the CPU;
    the 0.5 model reloads from its directory and gives the row's perplexity exactly."""
    import stat_exp
    import transformers

    need_data("wikitext2/wiki.test.raw", "c4/c4-train.00000-of-01024.first1041.jsonl")
    cfg = compose(["model=llama2_7b_random", "model.tiny.layers=2", "model.tiny.hidden=128", "model.tiny.heads=4",
                   "model.tiny.ffn=256", "model.tiny.vocab=512", "seqlen=128", f"model.assemble_dir={tmp_path}/m",
                   "calib=4", "calib_batch_size=1", "budget=[0.7,0.5]", "save_model=true", "logger=none",
                   f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}/cache"])
    rows = run_experiment(cfg)
    assert [(r["method"], r["budget"], r["dtype"]) for r in rows] == [
        ("dense", 1.0, "bfloat16"), ("stat", 0.7, "bfloat16"), ("stat", 0.5, "bfloat16")]
    assert all(r["budget"] - 0.1 < r["achieved"] <= r["budget"] + 1e-9 for r in rows)  # 4 heads: coarse units
    assert list((tmp_path / "m").glob("random-*.pt"))
    stat_exp.register()
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "pruned_stat_0.5")
    assert {p.dtype for p in back.parameters()} == {torch.bfloat16}
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "pruned_stat_0.5")
    ppl = stat_exp.evaluate(back, tok, "wikitext2", seqlen=128, windows=1)["ppl_wikitext2"]
    assert ppl == rows[-1]["ppl_wikitext2"]


def test_report_times_pay_calibration_once_and_pruning_per_budget():
    """times.md: calibration is counted once per run (every budget row of a run repeats it), pruning per budget;
    seeds (runs) are averaged."""
    from stat_exp.report import times

    rows = [{"task": "t", "method": "dense", "budget": 1.0, "run": "a"}]
    for run, cal, prunes in (("a", 10.0, (1.0, 3.0)), ("b", 20.0, (2.0, 2.0))):
        rows += [{"task": "t", "method": "kwon", "budget": b, "run": run, "calibrate_s": cal, "prune_s": p}
                 for b, p in zip((0.7, 0.5), prunes)]
    md = times(rows)
    assert "| kwon | 15.0 | 2.00 | 19.0 |" in md and "2 run(s)" in md and "dense" not in md


def test_dense_key_ignores_what_does_not_change_a_dense_score():
    """The labelled batch size feeds gradient methods only, so it must not split the dense row's cache; the
    evaluation protocol must."""
    from stat_exp.pipeline import dense_key

    def key(*o):
        cfg = compose(["model=tiny_llama_gqa", "debug=fast", *o])
        return dense_key(cfg, cfg.model, "cpu")

    assert key("++task.label_batch_size=1") == key("++task.label_batch_size=4")
    assert key("eval_windows=2") != key("eval_windows=3")
