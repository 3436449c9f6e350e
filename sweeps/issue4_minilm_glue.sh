#!/usr/bin/env bash
# Issue 4 as run on the 2-core CPU: MiniLM-L6 fine-tuned per task with the task configs' default (CPU-sized)
# recipes (SST-2 on a seeded 8k-example subset for 1 epoch, STS-B on 3k for 2 epochs, MRPC and RTE 2 epochs at
# lr 1e-4; CoLA 3 epochs at 5e-5), then pruned at FLOPs kept 0.7/0.6/0.5/0.4: STAT vs flap, wanda_sp, magnitude,
# kwon (calib 512 train examples).
# SQuAD v1.1: fine-tuned with the default recipe (all 5 696 questions of the first 24 dev articles, 2 epochs),
# evaluated on the 4 874 questions of the other 24 articles (dev-heldout), dense and STAT at 0.6. The last run
# times the evaluation of all 10 570 dev questions (task.eval_all=true; its scores include the fine-tuning part).
set -euo pipefail
for t in sst2 mrpc stsb rte cola; do
  python run.py experiment=minilm_glue logger=none task=$t baselines=[flap,wanda_sp,magnitude,kwon] \
    hydra.run.dir=outputs/issue4_glue/$t
done
python run.py model=minilm_l6 task=squad_v1 method=stat baselines=[] budget=0.6 calib=256 calib_batch_size=16 \
  logger=none hydra.run.dir=outputs/issue4_squad_ft
python run.py model=minilm_l6 task=squad_v1 method=stat baselines=[] budget=0.6 calib=256 calib_batch_size=16 \
  logger=none task.finetune.train_limit=1000 task.finetune.epochs=1 task.eval_all=true hydra.run.dir=outputs/issue4_squad_full
python -m stat_exp.report results/issue4_minilm_glue outputs/issue4_glue/* --metric auto
python -m stat_exp.report results/issue4_minilm_squad outputs/issue4_squad_ft --metric f1_squad_v1
python -m stat_exp.report results/issue4_minilm_squad_speed outputs/issue4_squad_full --metric f1_squad_v1
