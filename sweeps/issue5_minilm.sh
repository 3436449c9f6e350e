#!/usr/bin/env bash
# Issue 5 as run on the 2-core CPU:
# (1) the GLUE comparison, three seeds (sweeps/issue5_cmp_glue.sh = `python run.py -m experiment=cmp_glue`);
# (2) the calibration-size curve, STAT vs Kwon on SST-2 at 0.5, seeds 0, 1, 2 (run as seed=0, then seed=1,2);
# (3) measured latency at FLOPs kept 0.5, alone on the machine.
set -euo pipefail
python run.py -m experiment=cmp_glue logger=${LOGGER:-wandb}
python -m stat_exp.report results/issue5_minilm_glue outputs/cmp_glue --metric auto
python run.py -m experiment=cmp_calib seed=${CALIB_SEEDS:-0,1,2} logger=none
python -m stat_exp.report results/issue5_minilm_calib outputs/cmp_calib --metric accuracy_sst2 --by calib
python run.py experiment=minilm_glue task=sst2 budget=0.5 baselines=[kwon,flap,magnitude] logger=none \
  latency.enabled=true latency.batch_size=32 latency.seqlen=128 latency.repeats=20 hydra.run.dir=outputs/issue5_latency
python -m stat_exp.report results/issue5_minilm_latency outputs/issue5_latency --metric accuracy_sst2
