#!/usr/bin/env bash
# stat_paper, STAT's released recipe (STAT.md §4.1: the released allocation, variant by family, FFN share from our
# cost model, the OPT script's block Gaussian sketch for decoders). SmolLM2-135M: calibration 32 x 1024 C4, first 10
# windows x 1024 of each test set; MiniLM-L6: STS-B. Studies: results/smollm2/stat_as_published*,
# results/minilm/stat_as_published_stsb.
set -euo pipefail
OUT=${OUT:-outputs/stat_as_published}
L="logger=${LOGGER:-wandb}"
python run.py method=stat_paper budget=[0.9,0.8,0.7,0.6,0.5] calib=32 eval_windows=10 $L \
  logger.group=smollm2/stat_as_published hydra.run.dir="$OUT/smollm2_wikitext2"
python run.py method=stat_paper method.options.paper_sketch=false budget=[0.9,0.8,0.7,0.6,0.5] calib=32 \
  eval_windows=10 dense=false $L logger.group=smollm2/stat_as_published hydra.run.dir="$OUT/smollm2_wikitext2_exact_gram"
python run.py method=stat_paper task=lm_all budget=0.7 calib=32 eval_windows=10 $L \
  logger.group=smollm2/stat_as_published_corpora hydra.run.dir="$OUT/smollm2_lm_all"
python run.py experiment=minilm_stsb method=stat_paper baselines=[] $L logger.group=minilm/stat_as_published_stsb \
  hydra.run.dir="$OUT/minilm_stsb"
python -m stat_exp.report results/smollm2/stat_as_published "$OUT/smollm2_wikitext2" --metric ppl_wikitext2
for c in wikitext2 ptb c4; do
  python -m stat_exp.report results/smollm2/stat_as_published_$c "$OUT/smollm2_lm_all" --metric ppl_$c; done
python -m stat_exp.report results/minilm/stat_as_published_stsb "$OUT/minilm_stsb" --metric cos_stsb
