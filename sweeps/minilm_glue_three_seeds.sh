#!/usr/bin/env bash
# MiniLM-L6 on SST-2, MRPC, STS-B x seeds 0, 1, 2: STAT vs Kwon et al., FLAP, magnitude (conf/experiment/cmp_glue.yaml),
# one Hydra multirun; pass a launcher, e.g. hydra/launcher=joblib hydra.launcher.n_jobs=2 or hydra/launcher=slurm
# hydra.launcher.partition=gpu. Study: results/minilm/glue_methods_three_seeds.
set -euo pipefail
OUT=${OUT:-outputs/minilm_glue_three_seeds}
python run.py -m experiment=cmp_glue logger=${LOGGER:-wandb} logger.group=minilm/glue_methods_three_seeds \
  hydra.sweep.dir="$OUT" "$@"
python -m stat_exp.report results/minilm/glue_methods_three_seeds "$OUT" --metric auto
