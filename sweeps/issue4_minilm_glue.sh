#!/usr/bin/env bash
# Issue 4 as run on the 2-core CPU: MiniLM-L6 fine-tuned per task with a CPU-budget recipe (lr 1e-4; SST-2 on a
# seeded 8k-example subset, STS-B on 3k, 2 epochs elsewhere: the task configs' default recipes), then pruned at FLOPs kept 0.7/0.6/0.5/0.4:
# STAT vs flap, wanda_sp, magnitude. Then SQuAD v1.1 (first 24 dev articles fine-tune, the rest evaluate).
set -euo pipefail
common="experiment=minilm_glue logger=none task.finetune.lr=1e-4"
python run.py $common task=sst2 task.finetune.train_limit=8000 task.finetune.epochs=1 hydra.run.dir=outputs/issue4_glue/sst2
python run.py $common task=mrpc task.finetune.epochs=2 hydra.run.dir=outputs/issue4_glue/mrpc
python run.py $common task=stsb task.finetune.train_limit=3000 task.finetune.epochs=2 hydra.run.dir=outputs/issue4_glue/stsb
python run.py $common task=rte task.finetune.epochs=2 task.max_len=128 hydra.run.dir=outputs/issue4_glue/rte
python run.py model=minilm_l6 task=squad_v1 method=stat baselines=[] budget=0.6 calib=256 calib_batch_size=16 \
  logger=none task.finetune.train_limit=1500 task.finetune.epochs=1 hydra.run.dir=outputs/issue4_squad
python -m stat_exp.report results/issue4_minilm_glue outputs/issue4_glue/* --metric auto
