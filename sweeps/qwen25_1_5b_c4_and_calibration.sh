#!/usr/bin/env bash
# Qwen2.5-Coder-1.5B-Instruct: C4 (first 10 windows of 2048) at FLOPs kept 0.7, then STAT's calibration-size curve
# at 0.7 on WikiText-2 (CALIBS, default 8 16 32 64 sequences of 2048 C4 tokens; about 25 / 15 (cached) / 55 / 87 min
# on a 2-core CPU). fp32, KV-group units, seed 0; rerunnable. Studies: results/qwen25_1_5b/c4_0.7 and calibration_size.
set -euo pipefail
OUT=${OUT:-outputs/qwen25_1_5b}
common=(model=qwen25_coder_1_5b model.dtype=float32 logger=${LOGGER:-wandb} paths.cache_max_gb=12)
python run.py "${common[@]}" logger.group=qwen25_1_5b/c4_0.7 task=c4 budget=[0.7] \
  "baselines=${C4_BASELINES:-[flap,wanda_sp]}" hydra.run.dir="$OUT/c4_0.7"
for c in ${CALIBS:-8 16 32 64}; do
  python run.py "${common[@]}" logger.group=qwen25_1_5b/calibration_size calib="$c" budget=[0.7] dense=false \
    hydra.run.dir="$OUT/calibration_size/calib$c"
done
python -m stat_exp.report results/qwen25_1_5b/c4_0.7 "$OUT/c4_0.7"
python -m stat_exp.report results/qwen25_1_5b/calibration_size "$OUT/calibration_size" --by calib \
  --pool calib_data,seqlen,budget_kind,bos,dtype,quant,sketch,sketch_dim,windows_wikitext2  # the 8/16/32 rows predate these fields
