#!/usr/bin/env bash
# SmolLM2-135M at FLOPs kept 0.8: STAT's statistics exact (Gram), by TSQR, and by CountSketch and Gaussian sketches
# of 1x, 2x, 4x the site's width (calibration 32 x 1024 C4 tokens, WikiText-2 first 10 windows of 1024, seed 0).
# One run per variant, statistics computed (not read from the cache), each run's peak RSS from /usr/bin/time;
# then the kept units of every plan are compared with the exact plan's (overlap_exact: fraction of the exact
# plan's kept units, heads and neurons together, that the variant keeps too). Run it alone: the rows carry times.
# Study: results/smollm2/sketches.
set -euo pipefail
OUT=${OUT:-outputs/smollm2_sketches}
common=(budget=[0.8] calib=32 eval_windows=10 save_model=true method.options.cache=false logger=${LOGGER:-wandb})
run() {  # name, overrides...
  local name=$1; shift
  [ -f "$OUT/$name/results.jsonl" ] && grep -q '"method": "stat"' "$OUT/$name/results.jsonl" && return
  mkdir -p "$OUT/$name"
  /usr/bin/time -v -o "$OUT/$name/time.txt" python run.py "${common[@]}" logger.group=smollm2/sketches "$@" \
    hydra.run.dir="$OUT/$name"
}
run exact sketch=none
run tsqr sketch=tsqr
for k in 1x 2x 4x; do
  run countsketch_$k sketch=countsketch sketch.dim=$k
  run gaussian_$k sketch=gaussian sketch.dim=$k
done
python - "$OUT" <<'PY'
import json, re, sys
from pathlib import Path
out = Path(sys.argv[1])
exact = json.loads((out / "exact" / "pruned_stat_0.8" / "plan.json").read_text())["keep"]
def units(keep):
    return {(li, kind, u) for li, layer in enumerate(keep) for kind, us in layer.items() for u in us}
ref = units(exact)
for d in sorted(p for p in out.iterdir() if (p / "results.jsonl").exists()):
    rows = [json.loads(l) for l in (d / "results.jsonl").read_text().splitlines()]
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", (d / "time.txt").read_text()).group(1))
    for r in rows:
        r["max_rss_gb"] = rss / 2**20
        r.setdefault("sketch", "gram")
        if r["method"] == "stat":
            got = units(json.loads((d / "pruned_stat_0.8" / "plan.json").read_text())["keep"])
            r["overlap_exact"] = len(got & ref) / len(ref)
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
PY
python -m stat_exp.report results/smollm2/sketches "$OUT" --metric ppl_wikitext2 --xy stage_statistics_s:sketch \
  --columns sketch,sketch_dim,overlap_exact,stage_statistics_s,stage_factorization_s,max_rss_gb
