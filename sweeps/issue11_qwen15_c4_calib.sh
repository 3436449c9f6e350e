#!/usr/bin/env bash
# Qwen2.5-Coder-1.5B-Instruct, the rest of the scale table: C4 (first 10 windows of 2048) at FLOPs kept 0.7 for
# the dense model, STAT, FLAP and Wanda-sp, then STAT's calibration-size curve at 0.7 on WikiText-2 (8, 16, 32 ×
# 2048 C4 tokens). fp32 weights, KV-group units, seed 0. Each step has its own run directory and finished rows are
# skipped, so the script can be stopped and rerun. Run after issue11_qwen15_table.sh, the C4 step and calib=16
# take STAT's statistics from the cache. C4_BASELINES='[]' runs C4 for the dense model and STAT only; CALIBS
# picks the curve's points (≈ 25 / 15 / 55 min for 8 / 16 (cached) / 32 on a 2-core CPU).
set -euo pipefail
out=${OUT:-outputs}
common=(model=qwen25_coder_1_5b model.dtype=float32 logger=none paths.cache_max_gb=12)
python run.py "${common[@]}" task=c4 budget=[0.7] "baselines=${C4_BASELINES:-[flap,wanda_sp]}" \
  hydra.run.dir="$out/issue11_qwen15_c4"
for c in ${CALIBS:-8 16 32}; do
  python run.py "${common[@]}" calib="$c" budget=[0.7] dense=false hydra.run.dir="$out/issue11_qwen15_calib/calib$c"
done
python -m stat_exp.report results/issue11_qwen15_c4 "$out/issue11_qwen15_c4"
python -m stat_exp.report results/issue11_qwen15_calib "$out/issue11_qwen15_calib" --by calib
