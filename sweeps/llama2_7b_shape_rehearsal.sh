#!/usr/bin/env bash
# Llama-2-7B's shape with random bf16 weights (model=llama2_7b_random) through the real pipeline on one host:
# calibration 4 × 2048 tokens, budgets 0.7 and 0.5, one evaluation window of 2048, save_model=true, then a
# reload of the 0.5 model from its directory with its perplexity recomputed. Run it alone. Writes into $OUT:
# time.txt (/usr/bin/time -v of the run), rss.txt (peak resident memory, anonymous vs file-backed, sampled
# every second), reload.txt, and the run's results.jsonl / run.log. Extra arguments go to run.py.
set -euo pipefail
OUT=${OUT:-outputs/llama2_7b_rehearsal}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT"
/usr/bin/time -v -o "$OUT/time.txt" python run.py model=llama2_7b_random calib=4 calib_batch_size=1 \
    budget=[0.7,0.5] save_model=true logger=none paths.cache_max_gb=24 hydra.run.dir="$OUT" "$@" &
python - "$!" "$OUT/rss.txt" <<'PY' &
import subprocess, sys, time
parent, out = sys.argv[1], sys.argv[2]
peak, pid = {}, None
while subprocess.run(["kill", "-0", parent], capture_output=True).returncode == 0:
    pid = pid or (subprocess.run(["pgrep", "-P", parent], capture_output=True, text=True).stdout.split() or [None])[0]
    try:
        for line in open(f"/proc/{pid}/status"):
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile"):
                peak[k] = max(peak.get(k, 0), int(v.split()[0]))
    except (OSError, TypeError):
        pass
    time.sleep(1)
open(out, "w").write("".join(f"peak {k}: {v / 2**20:.2f} GiB\n" for k, v in peak.items()))
PY
wait
cat "$OUT/rss.txt"
grep -E "Maximum resident|Elapsed|Exit status" "$OUT/time.txt"
/usr/bin/time -v -o "$OUT/reload_time.txt" python - "$OUT" <<'PY' | tee "$OUT/reload.txt"
import json, pathlib, sys, time
import torch, transformers
import stat_exp
stat_exp.register()
run = pathlib.Path(sys.argv[1])
t = time.perf_counter()
model = transformers.AutoModelForCausalLM.from_pretrained(run / "pruned_stat_0.5", dtype=torch.bfloat16)
tok = transformers.AutoTokenizer.from_pretrained(run / "pruned_stat_0.5")
loaded = time.perf_counter() - t
row = next(r for r in map(json.loads, open(run / "results.jsonl")) if r["method"] == "stat" and r["budget"] == 0.5)
t = time.perf_counter()
ppl = stat_exp.evaluate(model, tok, "wikitext2", seqlen=row["seqlen"], windows=1)["ppl_wikitext2"]
print(f"reloaded {type(model).__name__} ({sum(p.numel() for p in model.parameters()) / 1e9:.3f}B parameters, "
      f"{model.dtype}) in {loaded:.1f} s; ppl {ppl:.6g} in {time.perf_counter() - t:.1f} s; "
      f"the run's row: {row['ppl_wikitext2']:.6g}; equal: {ppl == row['ppl_wikitext2']}")
PY
grep -E "Maximum resident|Elapsed" "$OUT/reload_time.txt"
