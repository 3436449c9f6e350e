#!/usr/bin/env bash
# SmolLM2-135M at FLOPs kept 0.7 on WikiText-2, PTB and C4 (first 10 windows of 1024 of each; calibration 32 x 1024
# C4), STAT's calibration-size curve at 0.7 (16 ... 128 sequences), and MiniLM-L6's STS-B sentence embeddings.
# Studies: results/smollm2/three_corpora_{wikitext2,ptb,c4}, results/smollm2/calibration_size,
# results/minilm/stsb_embeddings.
set -euo pipefail
OUT=${OUT:-outputs}
L="logger=${LOGGER:-wandb}"
python run.py method=stat baselines=[stat_nocorr,flap,stat_paper,wanda_sp,magnitude] calib=32 eval_windows=10 \
  task=lm_all budget=0.7 $L logger.group=smollm2/three_corpora hydra.run.dir="$OUT/smollm2_three_corpora"
for c in wikitext2 ptb c4; do
  python -m stat_exp.report results/smollm2/three_corpora_$c "$OUT/smollm2_three_corpora" --metric ppl_$c; done
python run.py -m method=stat calib=16,32,64,128 budget=0.7 eval_windows=10 dense=false $L \
  logger.group=smollm2/calibration_size hydra.sweep.dir="$OUT/smollm2_calibration_size"
python -m stat_exp.report results/smollm2/calibration_size "$OUT/smollm2_calibration_size" --metric ppl_wikitext2 --by calib
python run.py experiment=minilm_stsb $L logger.group=minilm/stsb_embeddings hydra.run.dir="$OUT/minilm_stsb_embeddings"
python -m stat_exp.report results/minilm/stsb_embeddings "$OUT/minilm_stsb_embeddings" --metric cos_stsb
