#!/usr/bin/env bash
# SmolLM2-135M WikiText-2 perplexity curves, STAT vs the decoder baselines x seeds (conf/experiment/cmp_lm.yaml), one
# Hydra multirun; pass a launcher (hydra/launcher=joblib ... or hydra/launcher=slurm ...).
# Study: results/smollm2/wikitext2_methods_three_seeds.
set -euo pipefail
OUT=${OUT:-outputs/smollm2_methods_three_seeds}
python run.py -m experiment=cmp_lm logger=${LOGGER:-wandb} logger.group=smollm2/wikitext2_methods_three_seeds \
  hydra.sweep.dir="$OUT" "$@"
python -m stat_exp.report results/smollm2/wikitext2_methods_three_seeds "$OUT" --metric ppl_wikitext2
