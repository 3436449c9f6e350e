"""Nothing lost, nothing mixed: atomic saves and rows, leftovers of killed jobs, two jobs on one cache, the cache
key's device, NaN/Inf and dead units in the activations, and ``kill -9`` at three points of a run."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, compose, make_tiny, need_data, outputs
from stat_exp import cache, files, methods
from stat_exp.adapters import get_adapter
from stat_exp.core.cost import CostModel
from stat_exp.engine.capture import capture_inputs
from stat_exp.errors import UserError
from stat_exp.pipeline import cache_key, run_experiment
from stat_exp.tracking import read_rows

RUN = ["model=tiny_llama_gqa", "debug=fast", "budget=[0.8,0.5]", "save_model=true", "logger=none"]
TIMING = ("_s", "latency")  # row fields that are times (differ between runs)


def _overrides(tmp_path, out="out", *extra):
    need_data("wikitext2/wiki.test.raw", "c4/c4-train.00000-of-01024.first1041.jsonl")
    return [*RUN, f"paths.output_dir={tmp_path / out}", f"paths.cache_dir={tmp_path / 'cache'}", *extra]


def _child(tmp_path, overrides, patch: str = "", name="child") -> subprocess.Popen:
    """``run_experiment`` in a real process, after ``patch`` (Python run first: makes the process stop at a
    point by touching ``MARK`` and sleeping, so the test can ``kill -9`` it there)."""
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(f"""
        import logging, sys, time
        from pathlib import Path
        logging.basicConfig(level=logging.INFO)
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from conftest import compose
        from stat_exp.pipeline import run_experiment
        MARK = Path({str(tmp_path / (name + '.mark'))!r})
        def pause():
            MARK.touch()
            time.sleep(600)
        """) + textwrap.dedent(patch) + f"\nrun_experiment(compose({overrides!r}))\n")
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def _wait(tmp_path, name, proc, timeout=240):
    mark = tmp_path / f"{name}.mark"
    t = time.time()
    while not mark.exists():
        assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
        assert time.time() - t < timeout, "the child never reached its pause point"
        time.sleep(0.1)


def _strip(row):
    return {k: v for k, v in row.items() if not any(t in k for t in TIMING)}


# ---- atomic writes, leftovers ------------------------------------------------------------------------------

def test_write_atomic_leaves_old_file_when_the_writer_fails(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_text("old\n")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        files.write_atomic(p, broken)
    assert p.read_text() == "old\n" and sorted(x.name for x in tmp_path.iterdir()) == ["rows.jsonl"]


def test_leftovers_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (dead.pid, live.pid):
            (tmp_path / f"stat-spill-{files.HOST}-{pid}-abc123").mkdir()
            (tmp_path / f"stat-spill-{files.HOST}-{pid}-abc123" / "0000.pt").write_bytes(b"x")
            (tmp_path / f"stat-0123.pt.{files.HOST}-{pid}.tmp").write_bytes(b"x")
        (tmp_path / "stat-spill-otherhost-1-abc").mkdir()  # another host's: its owner may be alive there
        cache.main(["list", str(tmp_path)])
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([f"stat-spill-{files.HOST}-{live.pid}-abc123", f"stat-0123.pt.{files.HOST}-{live.pid}.tmp",
                               "stat-spill-otherhost-1-abc"])
    finally:
        live.kill()


def test_eviction_and_clear_skip_an_entry_another_process_reads(tmp_path):
    for i, age in enumerate((300, 200)):
        f = tmp_path / f"stat-{i}.pt"
        f.write_bytes(b"x" * 1000)
        os.utime(f, (time.time() - age, time.time() - age))
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from stat_exp import cache
        cache.hold(Path({str(tmp_path / 'stat-0.pt')!r}))
        Path({str(tmp_path / 'held')!r}).touch()
        time.sleep(60)""")], cwd=ROOT)
    try:
        while not (tmp_path / "held").exists():
            assert reader.poll() is None
            time.sleep(0.05)
        assert cache.in_use(tmp_path / "stat-0.pt") and not cache.in_use(tmp_path / "stat-1.pt")
        removed = cache.evict(tmp_path, 500)  # stat-0 is the least recently used, but held
        assert [p.name for p, _ in removed] == ["stat-1.pt"] and (tmp_path / "stat-0.pt").exists()
        cache.main(["clear", str(tmp_path)])
        assert (tmp_path / "stat-0.pt").exists()
    finally:
        reader.kill()
        reader.wait()
    cache.main(["clear", str(tmp_path)])
    assert not (tmp_path / "stat-0.pt").exists()


def test_cache_key_holds_device_and_compute_dtype():
    cfg = compose(["model=tiny_llama", "model.dtype=bfloat16"])

    class T:
        calib_source, cost_seqlen = "c4", 16

    cpu, gpu = cache_key(cfg, cfg.model, T, "cpu"), cache_key(cfg, cfg.model, T, "cuda")
    assert (cpu["device"], cpu["compute_dtype"]) == ("cpu", "torch.float32")  # bf16 storage computes in fp32
    assert (gpu["device"], gpu["compute_dtype"]) == ("cuda", "torch.bfloat16")
    from stat_exp.methods.stat.statistics import cache_path

    assert cache_path("c", cpu, "none", None) != cache_path("c", gpu, "none", None)


# ---- two jobs on one cache ---------------------------------------------------------------------------------

def test_two_jobs_share_one_cache_one_computes_the_other_waits_and_reuses(tmp_path):
    """Job A computes the statistics (slowed down, so that B asks while A is still walking); B waits for A's
    entry and reads it, and reuses A's dense row; both log the same rows."""
    slow = """
        import stat_exp.methods.stat.statistics as st
        walk = st._walk
        def slow_walk(*a, **k):  # hold the entry's lock until job b says it waits for it
            MARK.touch()
            t, b_log = time.time(), MARK.with_name("b.log")
            while time.time() - t < 120 and not (b_log.exists() and "waiting: another job" in b_log.read_text()):
                time.sleep(0.2)
            return walk(*a, **k)
        st._walk = slow_walk
        """
    a = _child(tmp_path, _overrides(tmp_path, "a"), slow, "a")
    _wait(tmp_path, "a", a)
    b = _child(tmp_path, _overrides(tmp_path, "b"), "", "b")
    assert a.wait(240) == 0 and b.wait(240) == 0
    log_b = (tmp_path / "b.log").read_text()
    assert "waiting: another job is computing cache entry stat-" in log_b, log_b[-2000:]
    assert "STAT statistics: computing" in (tmp_path / "a.log").read_text()
    assert "STAT statistics: computing" not in log_b and "from cache" in log_b
    ra, rb = read_rows(tmp_path / "a" / "results.jsonl"), read_rows(tmp_path / "b" / "results.jsonl")
    assert len(ra) == 3 and [_strip(r) for r in ra] == [_strip(r) for r in rb]
    assert len(list((tmp_path / "cache").glob("stat-*.pt"))) == 1
    assert len(list((tmp_path / "cache").glob("dense-*.json"))) == 1


def test_dense_row_is_reused_across_calibration_sizes(tmp_path, caplog):
    first = run_experiment(compose(_overrides(tmp_path, "c4", "calib=4", "save_model=false")))
    with caplog.at_level("INFO", logger="stat_exp.cache"):
        second = run_experiment(compose(_overrides(tmp_path, "c5", "calib=5", "save_model=false")))
    d1, d2 = (next(r for r in rows if r["method"] == "dense") for rows in (first, second))
    assert d1["ppl_wikitext2"] == d2["ppl_wikitext2"] and d2["calib"] == 5
    assert any("dense-" in m and "from cache" in m for m in caplog.messages)
    s1, s2 = (next(r for r in rows if r["method"] == "stat") for rows in (first, second))
    assert s1["ppl_wikitext2"] != s2["ppl_wikitext2"]  # the pruned rows do depend on calib


# ---- kill -9 at three points, then the rerun ---------------------------------------------------------------

KILL_POINTS = {
    "walk": """
        import stat_exp.methods.stat.statistics as st
        pack, n = st.pack, []
        def pack_then_pause(G):
            n.append(1)
            if len(n) == 3:  # layer 1 of the walk: layer 0 is in the spill directory
                pause()
            return pack(G)
        st.pack = pack_then_pause
        """,
    "between_budgets": """
        from stat_exp import tracking
        log = tracking.Tracker.log
        def log_then_pause(self, row):
            log(self, row)
            if row["method"] == "stat":
                pause()
        tracking.Tracker.log = log_then_pause
        """,
    "save": """
        from stat_exp import files
        def pause_before_rename(tmp, final):
            pause()
        files.replace_dir = pause_before_rename
        """,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_rerun_keeps_every_row_once_and_leaves_nothing_partial(tmp_path, point):
    over = _overrides(tmp_path)
    p = _child(tmp_path, over, KILL_POINTS[point], "victim")
    _wait(tmp_path, "victim", p)
    out, cache_dir = tmp_path / "out", tmp_path / "cache"
    if point == "walk":
        assert list(cache_dir.glob("stat-spill-*")), "the walk had spilled nothing"
    if point == "save":
        assert list(out.glob(".pruned_stat_0.8.*.tmp")), "the save had not started"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    before = read_rows(out / "results.jsonl")
    assert [r["method"] for r in before] == {"walk": ["dense"], "between_budgets": ["dense", "stat"],
                                             "save": ["dense"]}[point]
    run_experiment(compose(over))
    rows = read_rows(out / "results.jsonl")
    assert sorted((r["method"], r["budget"]) for r in rows) == [("dense", 1.0), ("stat", 0.5), ("stat", 0.8)]
    for r in before:  # finished rows are kept as they were, not redone
        assert next(x for x in rows if (x["method"], x["budget"]) == (r["method"], r["budget"])) == r
    assert sorted(d.name for d in out.iterdir() if d.name.startswith((".pruned", "pruned"))) == \
        ["pruned_stat_0.5", "pruned_stat_0.8"]
    assert not list(cache_dir.glob("stat-spill-*")) and not list(cache_dir.glob("*.tmp"))
    import transformers

    m = transformers.AutoModelForCausalLM.from_pretrained(out / "pruned_stat_0.8")
    assert json.loads((out / "pruned_stat_0.8" / "plan.json").read_text())["meta"]["budget"] == 0.8
    assert torch.isfinite(outputs(m, torch.randint(4, 250, (1, 8)))).all()


def test_rerun_redoes_a_row_whose_save_is_missing(tmp_path):
    over = _overrides(tmp_path, "out", "budget=[0.8]")
    first = run_experiment(compose(over))
    import shutil

    shutil.rmtree(tmp_path / "out" / "pruned_stat_0.8")  # a row without its model (an older run, a user's rm)
    again = run_experiment(compose(over))
    assert [r["method"] for r in again] == ["stat"] and (tmp_path / "out" / "pruned_stat_0.8" / "plan.json").exists()
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    assert sorted(r["method"] for r in rows) == ["dense", "stat"]  # replaced, not appended twice
    assert _strip(next(r for r in rows if r["method"] == "stat")) == _strip(next(r for r in first if r["method"] == "stat"))


# ---- degenerate activations -------------------------------------------------------------------------------

def _calibrated(model, name, **opts):
    ad = get_adapter(model)
    g = torch.Generator().manual_seed(5)
    x = torch.randint(4, 250, (8, 16), generator=g)
    cap = capture_inputs(model, ad, [{"input_ids": b} for b in x.split(4)])
    m = methods.build(name, **({"cache": False} if name == "stat" else {}), **opts)
    m.calibrate(methods.Context(model, ad, CostModel("flops", 16)), cap)
    return m


def test_nan_in_activations_stops_naming_layer_and_site():
    model, _ = make_tiny("llama", layers=3)
    with torch.no_grad():
        get_adapter(model).layers(model)[1].mlp.up_proj.weight[3, 0] = float("nan")
    for name in ("stat", "flap"):
        with pytest.raises(UserError, match=r"NaN/Inf in the calibration activations at layer 1, site 'ffn'"):
            _calibrated(model, name)


def _plant_dead_neurons(model, dead):
    """FFN neurons ``dead`` output zero in every layer (their up-projection rows zeroed)."""
    with torch.no_grad():
        for layer in get_adapter(model).layers(model):
            layer.mlp.up_proj.weight[dead] = 0


@pytest.mark.parametrize("name", ["stat", "flap", "wanda_sp"])
def test_dead_neurons_are_pruned_first(name):
    """All-zero units carry nothing: every method that reads activations prunes them before any live unit
    (magnitude reads weights only, random reads nothing: neither can see a dead unit, by their definition)."""
    model, _ = make_tiny("llama", layers=2)
    dead = [1, 7, 20]
    _plant_dead_neurons(model, dead)
    m = _calibrated(model, name)
    plan = m.plan(0.7)
    for li, kind in m.ctx.site_keys:
        if kind == "ffn":
            keep, n = plan.layers[li][kind].keep, m.ctx.adapter.sites(m.ctx.adapter.layers(model)[li])[kind].n_units
            assert n - len(keep) >= len(dead)  # the budget removes at least as many
            assert not set(dead) & set(keep), (li, keep)


def test_constant_neurons_are_pruned_first_by_stat_and_flap():
    """A neuron with zero variance (OPT: a zeroed fc1 row with a positive bias, ReLU(b) on every token) is
    reproduced exactly by the bias correction (STAT) and has zero fluctuation (FLAP): both prune it first."""
    model, _ = make_tiny("opt")
    const = [2, 9]
    with torch.no_grad():
        for layer in get_adapter(model).layers(model):
            layer.fc1.weight[const] = 0
            layer.fc1.bias[const] = 0.5
    for name in ("stat", "flap"):
        m = _calibrated(model, name)
        plan = m.plan(0.7)
        for li, kind in m.ctx.site_keys:
            if kind == "ffn":
                assert not set(const) & set(plan.layers[li][kind].keep), (name, li)


def test_rank_deficient_gram_gives_a_plan_within_budget():
    """Half of every layer's FFN neurons dead and the rest duplicated in pairs: a Gram of rank n/4; the
    factorisation does not fail and the plan keeps FLOPs within the budget, with finite outputs."""
    model, _ = make_tiny("llama", layers=2)
    with torch.no_grad():
        for layer in get_adapter(model).layers(model):
            up, gate = layer.mlp.up_proj.weight, layer.mlp.gate_proj.weight
            n = up.shape[0]
            up[n // 2:] = 0
            up[n // 4: n // 2], gate[n // 4: n // 2] = up[: n // 4], gate[: n // 4]
    import copy

    from stat_exp.core.cost import model_flops

    m = _calibrated(model, "stat")
    for b in (0.9, 0.6, 0.4):
        p = copy.deepcopy(model)
        m.prune(p, b)
        got = model_flops(m.ctx.adapter, p, 16)["prunable"] / model_flops(m.ctx.adapter, model, 16)["prunable"]
        assert got <= b + 1e-9
        assert torch.isfinite(outputs(p, torch.randint(4, 250, (1, 8)))).all()
