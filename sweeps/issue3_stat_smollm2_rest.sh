#!/usr/bin/env bash
# Issue 3, steps 2-4 as run on this 2-core CPU (reduced from sweeps/issue3_stat_smollm2.sh for time).
set -euo pipefail
# (4) MiniLM-L6 (BERT): STS-B sentence-embedding fidelity vs FLOPs kept, STAT vs baselines
python run.py experiment=minilm_stsb logger=none hydra.run.dir=outputs/issue3_minilm
python -m stat_exp.report results/issue3_stat_minilm_stsb outputs/issue3_minilm --metric cos_stsb
# (2) WikiText-2, PTB and C4 at 0.7 (first 10 windows of each)
python run.py method=stat baselines=[stat_nocorr,flap,stat_paper,wanda_sp,magnitude] calib=32 eval_windows=10 logger=none task=lm_all \
  budget=0.7 hydra.run.dir=outputs/issue3_lm_all
for m in ppl_wikitext2 ppl_ptb ppl_c4; do
  python -m stat_exp.report results/issue3_stat_smollm2_lm_all_$m outputs/issue3_lm_all --metric $m; done
# (3) calibration size (Hydra multirun), STAT at 0.7
python run.py -m method=stat calib=16,32,64,128 budget=0.7 eval_windows=10 dense=false logger=none \
  hydra.sweep.dir=outputs/issue3_calib
python -m stat_exp.report results/issue3_stat_smollm2_calib outputs/issue3_calib --metric ppl_wikitext2 --by calib
