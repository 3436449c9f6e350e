#!/usr/bin/env bash
# stat_paper as released (STAT.md §4.1: the released allocation, variant by family, FFN share from our cost model,
# the OPT script's block Gaussian sketch for decoders), re-measured where results/ had stat_paper rows.
# SmolLM2-135M: calib 32 x 1024 C4 train tokens, first 10 windows x 1024 of each test set; MiniLM-L6: STS-B.
set -euo pipefail
python run.py method=stat_paper budget=[0.9,0.8,0.7,0.6,0.5] calib=32 eval_windows=10 logger=none \
  hydra.run.dir=outputs/issue16_wikitext2
python run.py method=stat_paper method.options.paper_sketch=false budget=[0.9,0.8,0.7,0.6,0.5] calib=32 \
  eval_windows=10 dense=false logger=none hydra.run.dir=outputs/issue16_wikitext2_exact_gram
python run.py method=stat_paper task=lm_all budget=0.7 calib=32 eval_windows=10 logger=none \
  hydra.run.dir=outputs/issue16_lm_all
python run.py experiment=minilm_stsb method=stat_paper baselines=[] logger=none hydra.run.dir=outputs/issue16_minilm
python -m stat_exp.report results/issue16_stat_paper_smollm2_wikitext2 outputs/issue16_wikitext2 --metric ppl_wikitext2
for m in ppl_wikitext2 ppl_ptb ppl_c4; do
  python -m stat_exp.report results/issue16_stat_paper_smollm2_lm_all_$m outputs/issue16_lm_all --metric $m; done
python -m stat_exp.report results/issue16_stat_paper_minilm_stsb outputs/issue16_minilm --metric cos_stsb
