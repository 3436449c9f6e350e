#!/usr/bin/env bash
# Which part of a method's score is its units and which its compensation: each method's kept units put under each
# compensation: none; FLAP's (the dropped units' calibration mean into the consumer bias, correction=mean); STAT's
# least-squares fold with intercept (lstsq_bias). STAT keeps a saved plan's units with method.options.keep_from and
# folds them with its own statistics of the same calibration tokens. WikiText-2 first 10 windows, seed 0.
# MODEL picks the model, its calibration and defaults:
#   smollm2      SmolLM2-135M, 16 x 1024 C4 tokens (as results/smollm2/wikitext2_methods); UNITS query_head (the
#                better one for STAT and FLAP at 0.8 and 0.7), BUDGETS "0.8 0.7 0.9", PLANS "stat flap wanda_sp",
#                CORRECTIONS "none mean lstsq_bias", RIDGES 1e-2 (STAT's fold again with that ridge, relative to the
#                Gram's mean diagonal; the default is 1e-8): about 5 min for the plain runs, 1.3 min per crossed run
#   qwen25_1_5b  Qwen2.5-Coder-1.5B fp32, 16 x 2048 C4 tokens (as results/qwen25_1_5b/wikitext2_methods); STAT's
#                statistics from the cache; PLANS "stat flap", CORRECTIONS lstsq_bias; UNITS query_head, BUDGETS 0.8:
#                where FLAP is the best baseline (about 45 min alone on a 2-core CPU: FLAP's pass 10-17 min, every
#                evaluation about 7); at 0.9 it is FLAP with KV-group units: UNITS=kv_group BUDGETS=0.9 PLANS=flap
#                (STAT's row at 0.9 is results/qwen25_1_5b/wikitext2_methods')
# CALIB sets the calibration sequences for every run (default 16); OUT then gains _calib<n>. SEED sets the calibration
# draw (default 0); OUT then gains _seed<n>. CACHE_GB caps the statistics cache (default 12: two Qwen caches).
# Qwen at 32 x 2048 (every method on the same tokens): CALIB=32 MODEL=qwen25_1_5b PLANS=flap (FLAP, then FLAP's units
# under STAT's fold: STAT's statistics walk about 40 min), then CALIB=32 MODEL=qwen25_1_5b UNITS=kv_group PLANS=stat
# (STAT's own row, cached)
# SIZES=flap (the default) also runs STAT's own units at FLAP's sizes (method=stat_flap_sizes: each site keeps as many
# units as in FLAP's plan, chosen by STAT's pivots; under GQA within FLAP's KV groups), which tells FLAP's allocation
# from its choice of units; SIZES= skips it. Qwen at three budgets, that row alone (its statistics cached, about 8 min a
# budget): MODEL=qwen25_1_5b PLANS= BUDGETS="0.9 0.8 0.7" bash sweeps/units_vs_compensation.sh
# CHOOSE=greedy,flap (the default) also runs method=stat_choose: per budget the allocation of CHOOSE whose pruned model
# has the lowest next-token loss (STAT's own sizes or FLAP's here); the row records the choice and each candidate's
# loss. CHOOSE= skips it; CHOOSE=greedy,fisher,flap adds the Fisher
# allocation as a candidate (its backward pass: minutes on SmolLM2, about 32 min on the 1.5B model). The candidates'
# loss is measured on windows of the calibration corpus besides the calibration ones (CHOOSE_ON=unseen, the default),
# or with CHOOSE_ON=calibration on the calibration windows, which built the plans. CHOOSE_RIDGE=1e-8,0.1 folds every
# candidate at each of these ridges and chooses the fold's ridge with the allocation (4 candidates: about 12 min at
# 0.8 on the 1.5B model); SIZES_RIDGES="1e-2 0.1 1" runs the SIZES rows again with those fold ridges.
# Runs, under OUT/<units>/:
#   plain/                         the methods in PLANS with their models saved (their plan.json)
#   <budget>-<units>_<correction>  STAT's statistics, <units>' plan, that compensation
#   <budget>-<units>_lstsq_bias_ridge<r>  the same with STAT's fold at ridge r
#   <budget>-stat_<s>_sizes        STAT's units and fold at the sizes of <s>'s plan (SIZES)
#   <budget>-stat_<s>_sizes_ridge<r>  the same with the fold at ridge r (SIZES_RIDGES)
#   <budget>-stat_choose_<c>[_unseen][_ridges<rs>]  STAT with the allocation chosen among the candidates c (CHOOSE,
#                                  CHOOSE_ON; and the fold's ridge among CHOOSE_RIDGE's)
# FLAP's units with correction=mean are FLAP's model and Wanda-sp's with none are Wanda-sp's (tests/test_stat.py): those
# runs check that on the real model; STAT's units with lstsq_bias are STAT's own row (not rerun).
# Rerunnable: the plain run is skipped once its plans are saved, and a crossed run with its STAT row. The study keeps its
# rows and gains this OUT's. Rows name their units by method (keep_from=flap; a method's own
# rows keep_from=<itself>) and their compensation (correction=; FLAP's own rows mean, Wanda-sp's none).
set -euo pipefail
MODEL=${MODEL:-smollm2}
case $MODEL in
  smollm2) model=(); units=query_head; budgets="0.8 0.7 0.9"; plans="stat flap wanda_sp"
           corrections="none mean lstsq_bias"; ridges=1e-2; columns=seed,keep_from,correction,ridge,choose_from,choose_on,allocation_chosen,choose_ridge,ridge_chosen ;;
  qwen25_1_5b) model=(model=qwen25_coder_1_5b model.dtype=float32); units=query_head; budgets=0.8
               plans="stat flap"; corrections=lstsq_bias; ridges=; columns=seed,keep_from,correction,ridge,choose_from,choose_on,allocation_chosen,choose_ridge,ridge_chosen ;;
  *) echo "error: MODEL=$MODEL is not known here; choose smollm2 or qwen25_1_5b" >&2; exit 2 ;;
esac
UNITS=${UNITS:-$units}
BUDGETS=${BUDGETS:-$budgets}
PLANS=${PLANS-$plans}
CORRECTIONS=${CORRECTIONS:-$corrections}
RIDGES=${RIDGES:-$ridges}
SIZES=${SIZES-flap}
CHOOSE=${CHOOSE-greedy,flap}
CHOOSE_ON=${CHOOSE_ON:-unseen}
CHOOSE_RIDGE=${CHOOSE_RIDGE:-}
SIZES_RIDGES=${SIZES_RIDGES:-}
CALIB=${CALIB:-16}
SEED=${SEED:-0}
study=$MODEL/units_vs_compensation
OUT=${OUT:-outputs/${MODEL}_units_vs_compensation$([ "$CALIB" = 16 ] || echo _calib$CALIB)$([ "$SEED" = 0 ] || echo _seed$SEED)}
common=("${model[@]}" calib=$CALIB seed=$SEED attn_units=$UNITS eval_windows=10 paths.cache_max_gb=${CACHE_GB:-12} logger=${LOGGER:-wandb})
set -- $PLANS  # the plain run: the first of PLANS as the job's method, the others beside it
first=${1-}; [ $# = 0 ] || shift; rest=$(echo "$@" | tr ' ' ,)  # PLANS= runs no plain run (SIZES alone)
saved=1  # the plain run is skipped on a rerun once every plan it saves is there
for b in $BUDGETS; do for p in $PLANS; do [ -f "$OUT/$UNITS/plain/pruned_${p}_$b/plan.json" ] || saved=0; done; done
[ $saved = 1 ] || python run.py "${common[@]}" logger.group=$study budget=[$(echo $BUDGETS | tr ' ' ,)] method=$first \
  baselines=[$rest] save_model=true hydra.run.dir="$OUT/$UNITS/plain"
for b in $BUDGETS; do
  for p in $PLANS; do
    for c in $CORRECTIONS; do
      [ "$p" = stat ] && [ "$c" = lstsq_bias ] && continue  # STAT's own row
      dir="$OUT/$UNITS/$b-${p}_$c"
      [ -f "$dir/results.jsonl" ] && grep -q '"method": "stat"' "$dir/results.jsonl" && continue
      python run.py "${common[@]}" logger.group=$study budget=[$b] dense=false method.options.correction=$c \
        method.options.keep_from="$OUT/$UNITS/plain/pruned_${p}_$b/plan.json" hydra.run.dir="$dir"
    done
    for r in $RIDGES; do  # STAT's fold with a larger ridge on the same units
      dir="$OUT/$UNITS/$b-${p}_lstsq_bias_ridge$r"
      [ -f "$dir/results.jsonl" ] && grep -q '"method": "stat"' "$dir/results.jsonl" && continue
      python run.py "${common[@]}" logger.group=$study budget=[$b] dense=false method.options.ridge=$r \
        method.options.keep_from="$OUT/$UNITS/plain/pruned_${p}_$b/plan.json" hydra.run.dir="$dir"
    done
  done
  for z in $SIZES; do  # STAT's units at another method's sizes (and with the fold at each of SIZES_RIDGES)
    for r in default $SIZES_RIDGES; do
      dir="$OUT/$UNITS/$b-stat_${z}_sizes$([ $r = default ] || echo _ridge$r)"
      [ -f "$dir/results.jsonl" ] && grep -q "\"method\": \"stat_${z}_sizes\"" "$dir/results.jsonl" && continue
      python run.py "${common[@]}" logger.group=$study budget=[$b] dense=false method=stat_${z}_sizes \
        $([ $r = default ] || echo +method.options.ridge=$r) hydra.run.dir="$dir"
    done
  done
  for c in $CHOOSE; do  # STAT with its allocation chosen by measurement among the candidates c
    dir="$OUT/$UNITS/$b-stat_choose_$(echo $c | tr , _)$([ "$CHOOSE_ON" = calibration ] || echo _$CHOOSE_ON)"
    dir+=$([ -z "$CHOOSE_RIDGE" ] || echo _ridges$(echo $CHOOSE_RIDGE | tr , _))
    [ -f "$dir/results.jsonl" ] && grep -q '"method": "stat_choose"' "$dir/results.jsonl" && continue
    python run.py "${common[@]}" logger.group=$study budget=[$b] dense=false method=stat_choose \
      +method.options.choose_from=[$c] method.options.choose_on=$CHOOSE_ON hydra.run.dir="$dir" \
      ${CHOOSE_RIDGE:+"+method.options.choose_ridge=[$CHOOSE_RIDGE]"}
  done
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
own = {"stat": "lstsq_bias", "flap": "mean", "wanda_sp": "none"}  # each method's own compensation
for f in Path(sys.argv[1]).glob("*/*/results.jsonl"):  # rows name their units by method and their compensation
    rows = [json.loads(l) for l in f.read_text().splitlines()]
    for r in rows:
        if r["method"] != "dense":
            kept = str(r.get("keep_from", "stat" if r["method"].startswith("stat") else r["method"]))
            r["keep_from"] = Path(kept).parent.name.removeprefix("pruned_").rsplit("_", 1)[0] \
                if kept.endswith("plan.json") else kept
            r.setdefault("correction", own.get(r["method"], "lstsq_bias"))
            if r["correction"] == "lstsq_bias":
                r.setdefault("ridge", 1e-8)  # STAT's default
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
PY
python -m stat_exp.report results/$study results/$study "$OUT" --metric ppl_wikitext2 --columns $columns
