"""What a sweep meets, tried on a source tree: kill -9 during a model save (then the rerun), kill -9 during the
statistics walk (then `cache clear`), two jobs calibrating the same model on one cache at once, NaN in the
activations. Prints what each left behind.

    git worktree add /tmp/before <older commit>
    python sweeps/durability_before_after.py /tmp/before /tmp/durability/before
    python sweeps/durability_before_after.py . /tmp/durability/after
"""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

tree, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
py = sys.executable
env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled")
base = ["model=tiny_llama_gqa", "debug=fast", "budget=[0.8,0.5]", "logger=none", f"paths.data_dir={Path('data').resolve()}"]

def child(name, over, patch=""):
    s = work / f"{name}.py"
    s.write_text(textwrap.dedent(f"""
        import logging, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(tree)!r})
        logging.basicConfig(level=logging.INFO)
        from hydra import compose, initialize_config_dir
        MARK = Path({str(work / (name + '.mark'))!r})
        def pause():
            MARK.touch(); time.sleep(600)
        """) + textwrap.dedent(patch) + textwrap.dedent(f"""
        from stat_exp.pipeline import run_experiment
        with initialize_config_dir(config_dir={str(tree / 'conf')!r}, version_base=None):
            cfg = compose("config", overrides={over!r})
        run_experiment(cfg)
        """))
    return subprocess.Popen([py, str(s)], cwd=tree, env=env, stdout=open(work / f"{name}.log", "w"), stderr=subprocess.STDOUT)

def wait_mark(name, p, t=120):
    t0 = time.time()
    while not (work / f"{name}.mark").exists():
        if p.poll() is not None: print("  child ended early:", (work / f"{name}.log").read_text()[-500:]); return False
        if time.time() - t0 > t: return False
        time.sleep(0.1)
    return True

def rows(out):
    p = out / "results.jsonl"
    return [(json.loads(l)["method"], json.loads(l)["budget"]) for l in p.read_text().splitlines()] if p.exists() else []

def tree_of(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.parent == d) if d.exists() else []

work.mkdir(parents=True, exist_ok=True)
# 1. kill -9 during the save of the first pruned model
out, cache = work / "save", work / "save_cache"
over = base + ["save_model=true", f"hydra.run.dir={out}", f"paths.output_dir={out}", f"paths.cache_dir={cache}"]
patch = """
    import transformers.tokenization_utils_base as t
    orig = t.PreTrainedTokenizerBase.save_pretrained
    def slow(self, *a, **k):
        pause()
    t.PreTrainedTokenizerBase.save_pretrained = slow
"""
p = child("save", over, patch)
if wait_mark("save", p):
    p.send_signal(signal.SIGKILL); p.wait()
print("1. kill -9 mid-save: rows", rows(out), "| in out dir:", [x for x in tree_of(out) if "prun" in x],
      "| pruned_stat_0.8 holds:", tree_of(out / "pruned_stat_0.8")[:6])
r = subprocess.run([py, "-c", f"""
import sys; sys.path.insert(0, {str(tree)!r})
from hydra import compose, initialize_config_dir
from stat_exp.pipeline import run_experiment
with initialize_config_dir(config_dir={str(tree / 'conf')!r}, version_base=None):
    cfg = compose("config", overrides={over!r})
print([ (r['method'], r['budget']) for r in run_experiment(cfg)])
"""], cwd=tree, env=env, capture_output=True, text=True)
print("   rerun logged:", r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:],
      "| pruned_stat_0.8 complete:", (out / "pruned_stat_0.8" / "plan.json").exists())
# 2. kill -9 during the statistics walk
out, cache = work / "walk", work / "walk_cache"
over = base + [f"hydra.run.dir={out}", f"paths.output_dir={out}", f"paths.cache_dir={cache}"]
patch = """
    import stat_exp.methods.stat.statistics as st
    pack, n = st.pack, []
    def pp(G):
        n.append(1)
        if len(n) == 3: pause()
        return pack(G)
    st.pack = pp
"""
p = child("walk", over, patch)
if wait_mark("walk", p):
    p.send_signal(signal.SIGKILL); p.wait()
print("2. kill -9 mid-walk: cache dir holds", tree_of(cache))
r = subprocess.run([py, "-m", "stat_exp.cache", "clear", str(cache)], cwd=tree, env=env, capture_output=True, text=True)
print("   `python -m stat_exp.cache clear`:", r.stdout.strip(), "| left:", tree_of(cache))
# 3. two jobs on one cache at once
cache = work / "shared_cache"
patch = """
    import stat_exp.methods.stat.statistics as st
    import time as _t
    w = getattr(st, "_walk", None) or st.walk
    name = "_walk" if hasattr(st, "_walk") else "walk"
    def slow(*a, **k):
        MARK.touch(); _t.sleep(8); return w(*a, **k)
    setattr(st, name, slow)
"""
ps = []
for j in ("a", "b"):
    out = work / f"job_{j}"
    ps.append(child(f"job_{j}", base + [f"hydra.run.dir={out}", f"paths.output_dir={out}", f"paths.cache_dir={cache}"], patch))
    if j == "a": wait_mark("job_a", ps[0])
for q in ps: q.wait()
for j in ("a", "b"):
    log = (work / f"job_{j}.log").read_text()
    print(f"3. job {j}: computed statistics: {('computing' in log) or (work / f'job_{j}.mark').exists() and 'from cache' not in log}",
          "| read from cache:", "from cache" in log, "| waited:", "waiting" in log)
# 4. NaN in the activations
r = subprocess.run([py, "-c", f"""
import sys, torch; sys.path.insert(0, {str(tree)!r})
from stat_exp import methods
from stat_exp.adapters import get_adapter
from stat_exp.core.cost import CostModel
from stat_exp.engine.capture import capture_inputs
from stat_exp.engine.models import tiny_model
m, _ = tiny_model('llama', layers=3)
ad = get_adapter(m)
with torch.no_grad(): ad.layers(m)[1].mlp.up_proj.weight[3, 0] = float('nan')
cap = capture_inputs(m, ad, [{{'input_ids': torch.randint(4, 250, (4, 16))}}])
s = methods.build('stat', cache=False); s.calibrate(methods.Context(m, ad, CostModel('flops', 16)), cap)
p = s.plan(0.6); print('plan made:', [len(x['ffn'].keep) for x in p.layers])
"""], cwd=tree, env=env, capture_output=True, text=True)
print("4. NaN planted in layer 1's up_proj:", (r.stdout.strip() or r.stderr.strip().splitlines()[-1])[:300])
