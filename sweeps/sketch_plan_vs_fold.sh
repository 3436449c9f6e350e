#!/usr/bin/env bash
# Where a sketch's loss comes from: the plan it chooses (which units each site keeps) or the fold it computes (the
# least-squares correction from sketched statistics). FLOPs kept 0.8, WikiText-2 first 10 windows, seed 0. For each
# sketch in SKETCHES (default: CountSketch 1x, 2x, 4x and Gaussian 1x on SmolLM2, the two 1x on Qwen), two crossed runs
# (method.options.keep_from keeps a saved plan's units and folds with the run's own statistics):
#   exact_stats_<sketch>_plan   exact statistics, the sketch's plan
#   <sketch>_stats_exact_plan   the sketch's statistics, the exact plan
# beside the plain runs (exact, and each sketch, with its own plan), and for each ridge in RIDGES (default 1e-1 and 1
# on SmolLM2, none on Qwen; relative to the Gram's mean diagonal, STAT's default 1e-8), the exact plan folded with it:
#   <exact|sketch>_stats_exact_plan_ridge<r>   what a ridge costs an exact fold and saves a sketched one
# MODEL picks the model and its calibration:
#   smollm2      SmolLM2-135M, 32 x 1024 C4 tokens (as results/smollm2/sketches): the plain runs are made here,
#                with their models saved for their plan.json; 2-3 min per run, about 26 min in all, the ridge runs
#                about 25 more
#   qwen25_1_5b  Qwen2.5-Coder-1.5B fp32, 16 x 2048 C4 tokens, no dense row: the plain runs are
#                sweeps/sketches.sh's (PLANS, default outputs/qwen25_1_5b_sketches; run it first with
#                VARIANTS="exact countsketch_1x gaussian_1x"); exact statistics from the cache; alone on a 2-core
#                CPU about 11 min per exact_stats_ run (plus 21 min for the exact walk when the cache lacks it) and
#                the sketch's walk plus 11 min per _stats_exact_plan run (CountSketch 1x: 32 min, Gaussian 1x: about 50)
# Rerunnable: a run with its STAT row is skipped. Rows name the kept plan by its run (keep_from=countsketch_1x).
set -euo pipefail
MODEL=${MODEL:-smollm2}
case $MODEL in
  smollm2) model=(calib=32); study=smollm2/sketch_plan_vs_fold; plans=outputs/smollm2_sketch_plan_vs_fold
           sketches="countsketch_1x gaussian_1x countsketch_2x countsketch_4x"; ridges="1e-1 1" ;;
  qwen25_1_5b) model=(model=qwen25_coder_1_5b model.dtype=float32 calib=16 dense=false paths.cache_max_gb=12)
               study=qwen25_1_5b/sketch_plan_vs_fold; plans=outputs/qwen25_1_5b_sketches
               sketches="countsketch_1x gaussian_1x"; ridges= ;;
  *) echo "error: MODEL=$MODEL is not known here; choose smollm2 or qwen25_1_5b" >&2; exit 2 ;;
esac
OUT=${OUT:-outputs/${study/\//_}}
PLANS=${PLANS:-$plans}
SKETCHES=${SKETCHES:-$sketches}
RIDGES=${RIDGES:-$ridges}
common=("${model[@]}" budget=[0.8] eval_windows=10 logger=${LOGGER:-wandb})
stats() {  # the statistics of a variant: exact (cached) or a sketch (computed, not cached)
  case $1 in
    exact) echo sketch=none ;;
    countsketch_*|gaussian_*) echo sketch="${1%_*}" sketch.dim="${1##*_}" method.options.cache=false ;;
    *) echo "error: sketch '$1' is not known; choose countsketch_<k>x or gaussian_<k>x" >&2; exit 2 ;;
  esac
}
for v in $SKETCHES; do stats "$v" >/dev/null; done  # an unknown sketch stops here
plan() { echo "$PLANS/$1/pruned_stat_0.8/plan.json"; }
run() {  # run name, overrides...
  local name=$1; shift
  [ -f "$OUT/$name/results.jsonl" ] && grep -q '"method": "stat"' "$OUT/$name/results.jsonl" && return
  python run.py "${common[@]}" logger.group=$study "$@" hydra.run.dir="$OUT/$name"
}
for v in exact $SKETCHES; do  # the plain runs, whose saved plans the crossed runs keep
  [ -f "$(plan "$v")" ] || { [ "$PLANS" = "$OUT" ] && run "$v" $(stats "$v") save_model=true; } || {
    echo "error: no plan $(plan "$v"); run sweeps/sketches.sh first or set PLANS" >&2; exit 2; }
done
for v in $SKETCHES; do
  run "exact_stats_${v}_plan" $(stats exact) method.options.keep_from="$(plan "$v")"
  run "${v}_stats_exact_plan" $(stats "$v") method.options.keep_from="$(plan exact)"
done
for r in $RIDGES; do  # the exact plan folded with a larger ridge: exact statistics (its bias), each sketch's
  for v in exact $SKETCHES; do
    run "${v}_stats_exact_plan_ridge$r" $(stats "$v") method.options.ridge=$r method.options.keep_from="$(plan exact)"
  done
done
plain=(); [ "$PLANS" = "$OUT" ] || for v in exact $SKETCHES; do plain+=("$PLANS/$v"); done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
files = list(Path(sys.argv[1]).glob("*/results.jsonl"))
ridged = any('"ridge"' in f.read_text() for f in files)
for f in files:  # exact rows say sketch=gram; a kept plan is named by its run; with ridge runs, the others say 1e-8
    rows = [json.loads(l) for l in f.read_text().splitlines()]
    for r in rows:
        if r["method"] != "dense":
            r.setdefault("sketch", "gram")
            if ridged:
                r.setdefault("ridge", 1e-8)
        if str(r.get("keep_from")).endswith("plan.json"):
            r["keep_from"] = Path(r["keep_from"]).parent.parent.name
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
PY
python -m stat_exp.report results/$study "$OUT" "${plain[@]}" --metric ppl_wikitext2 --columns sketch,sketch_dim,keep_from,ridge
