#!/usr/bin/env bash
# STAT's statistics at FLOPs kept 0.8, exact (Gram), by TSQR, and by CountSketch and Gaussian sketches of 1x, 2x,
# 4x the site's width; WikiText-2 first 10 windows, seed 0. MODEL picks the model and its calibration:
#   smollm2      SmolLM2-135M, 32 x 1024 C4 tokens (study results/smollm2/sketches; about 25 min alone)
#   qwen25_1_5b  Qwen2.5-Coder-1.5B fp32, 16 x 2048 C4 tokens, no dense row (results/qwen25_1_5b/sketches;
#                alone on a 2-core CPU: 32 min for CountSketch 1x, 39-53 min for
#                CountSketch 2x/4x and Gaussian 1x, about 1.2-2 h each for TSQR and Gaussian 2x/4x)
# VARIANTS picks the runs (default: all eight). One run per variant, statistics computed (not read from the
# cache), each run's peak RSS from /usr/bin/time; then the kept units of every plan are compared with the exact
# plan's (overlap_exact: fraction of the exact plan's kept units, heads and neurons together, that the variant
# keeps too). Run it alone: the rows carry times. Rerunnable: a variant with its STAT row is skipped.
# CACHE=true lets a run read the statistics another run cached (same model, tokens, precision): its row then says
# statistics=cache and no stage_statistics_s (it made no walk; e.g. the exact row on Qwen after
# sweeps/qwen25_1_5b_downstream_allocation.sh, whose row gives the exact walk's seconds).
set -euo pipefail
MODEL=${MODEL:-smollm2}
case $MODEL in
  smollm2) model=(calib=32); study=smollm2/sketches ;;
  qwen25_1_5b) model=(model=qwen25_coder_1_5b model.dtype=float32 calib=16 dense=false paths.cache_max_gb=12)
               study=qwen25_1_5b/sketches ;;
  *) echo "error: MODEL=$MODEL is not known here; choose smollm2 or qwen25_1_5b" >&2; exit 2 ;;
esac
OUT=${OUT:-outputs/${study/\//_}}
common=("${model[@]}" budget=[0.8] eval_windows=10 save_model=true method.options.cache=${CACHE:-false} logger=${LOGGER:-wandb})
run() {  # name, overrides...
  local name=$1; shift
  [ -f "$OUT/$name/results.jsonl" ] && grep -q '"method": "stat"' "$OUT/$name/results.jsonl" && return
  mkdir -p "$OUT/$name"
  if [ "${CACHE:-false}" = true ]; then touch "$OUT/$name/cached"; else rm -f "$OUT/$name/cached"; fi
  /usr/bin/time -v -o "$OUT/$name/time.txt" python run.py "${common[@]}" logger.group=$study "$@" \
    hydra.run.dir="$OUT/$name"
}
for v in ${VARIANTS:-exact tsqr countsketch_1x gaussian_1x countsketch_2x gaussian_2x countsketch_4x gaussian_4x}; do
  case $v in
    exact) run exact sketch=none ;;
    tsqr) run tsqr sketch=tsqr ;;
    countsketch_*|gaussian_*) run "$v" sketch="${v%_*}" sketch.dim="${v##*_}" ;;
    *) echo "error: variant '$v' is not known; choose exact, tsqr, countsketch_<k>x or gaussian_<k>x" >&2; exit 2 ;;
  esac
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
        r["statistics"] = "cache" if (d / "cached").exists() else "walk"
        if r["statistics"] == "cache":
            r["stage_statistics_s"] = None
        if r["method"] == "stat":
            got = units(json.loads((d / "pruned_stat_0.8" / "plan.json").read_text())["keep"])
            r["overlap_exact"] = len(got & ref) / len(ref)
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
PY
python -m stat_exp.report results/$study "$OUT" --metric ppl_wikitext2 --xy stage_statistics_s:sketch \
  --columns sketch,sketch_dim,overlap_exact,statistics,stage_statistics_s,stage_factorization_s,max_rss_gb
