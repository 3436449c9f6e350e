#!/usr/bin/env bash
# Issue 3 on this CPU: STAT vs its ablations vs baselines on SmolLM2-135M (calib 32 x 1024 C4 tokens,
# evaluation on the first 10 windows of 1024 tokens of each test set).
set -euo pipefail
M="method=stat baselines=[stat_paper,stat_nocorr,flap,wanda_sp,magnitude] calib=32 eval_windows=10 logger=none"
# (1) WikiText-2 at FLOPs kept 0.9 ... 0.5
python run.py $M budget=[0.9,0.8,0.7,0.6,0.5] hydra.run.dir=outputs/issue3_wikitext2
python -m stat_exp.report results/issue3_stat_smollm2_wikitext2 outputs/issue3_wikitext2 --metric ppl_wikitext2
# (2) WikiText-2, PTB and C4 at 0.7
python run.py $M task=lm_all budget=0.7 hydra.run.dir=outputs/issue3_lm_all
for m in ppl_wikitext2 ppl_ptb ppl_c4; do
  python -m stat_exp.report results/issue3_stat_smollm2_lm_all_$m outputs/issue3_lm_all --metric $m; done
# (3) calibration size (Hydra multirun), STAT at 0.7
python run.py -m method=stat calib=8,16,32,64 budget=0.7 eval_windows=10 dense=false logger=none \
  hydra.sweep.dir=outputs/issue3_calib
python -m stat_exp.report results/issue3_stat_smollm2_calib outputs/issue3_calib --metric ppl_wikitext2 --by calib
# (4) MiniLM-L6 (BERT): STS-B sentence-embedding fidelity vs FLOPs kept
python run.py experiment=minilm_stsb logger=none hydra.run.dir=outputs/issue3_minilm
python -m stat_exp.report results/issue3_stat_minilm_stsb outputs/issue3_minilm --metric cos_stsb
