#!/usr/bin/env bash
# Issue 5 comparison (calib): one Hydra multirun (conf/experiment/cmp_calib.yaml), then the report from the local files.
# Re-running skips finished jobs' rows (Ctrl-C safe). Pass launcher overrides through, e.g.
#   bash sweeps/issue5_cmp_calib.sh hydra/launcher=joblib hydra.launcher.n_jobs=2
#   bash sweeps/issue5_cmp_calib.sh hydra/launcher=submitit_slurm hydra.launcher.partition=gpu
set -euo pipefail
python run.py -m experiment=cmp_calib logger=${LOGGER:-wandb} "$@"
python -m stat_exp.report results/cmp_calib outputs/cmp_calib --by calib
