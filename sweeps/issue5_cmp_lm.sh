#!/usr/bin/env bash
# Issue 5 comparison (lm): one Hydra multirun (conf/experiment/cmp_lm.yaml), then the report from the local files.
# Re-running skips finished jobs' rows (Ctrl-C safe). Pass launcher overrides through, e.g.
#   bash sweeps/issue5_cmp_lm.sh hydra/launcher=joblib hydra.launcher.n_jobs=2
#   bash sweeps/issue5_cmp_lm.sh hydra/launcher=submitit_slurm hydra.launcher.partition=gpu
set -euo pipefail
python run.py -m experiment=cmp_lm logger=${LOGGER:-wandb} "$@"
python -m stat_exp.report results/cmp_lm outputs/cmp_lm 
