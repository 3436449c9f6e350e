#!/usr/bin/env bash
# Issue 5 as run on the 2-core CPU (a reduced form of sweeps/issue5_cmp_*.sh, seed 0 only):
# (1) Kwon et al. added to the issue-4 GLUE runs (resume computes only the missing method's rows),
# (2) the calibration-size curve, STAT vs Kwon on SST-2 at 0.5, (3) measured latency at FLOPs kept 0.5.
set -euo pipefail
for t in ${TASKS:-sst2 mrpc stsb}; do
  python run.py experiment=minilm_glue task=$t baselines=[flap,wanda_sp,magnitude,kwon] logger=none \
    hydra.run.dir=outputs/issue4_glue/$t
done
python run.py -m experiment=cmp_calib seed=0 logger=none
python run.py experiment=minilm_glue task=sst2 budget=0.5 baselines=[kwon,flap,magnitude] logger=none \
  latency.enabled=true latency.batch_size=32 latency.seqlen=128 latency.repeats=20 hydra.run.dir=outputs/issue5_latency
