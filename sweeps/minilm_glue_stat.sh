#!/usr/bin/env bash
# MiniLM-L6 fine-tuned per task with the task configs' CPU-sized recipes, then pruned at FLOPs kept 0.7 ... 0.4,
# STAT vs the baselines (calibration 512 train examples): SST-2, MRPC, STS-B, RTE, CoLA. Then SQuAD v1.1:
# fine-tuned on the first 24 dev articles, evaluated on the other 24 (dev-heldout), dense and 0.6; and the time of
# evaluating all 10 570 dev questions (task.eval_all=true). Studies: results/minilm/glue_five_tasks,
# squad_methods, squad_eval_time.
set -euo pipefail
OUT=${OUT:-outputs/minilm}
L="logger=${LOGGER:-wandb}"
for t in sst2 mrpc stsb rte cola; do
  python run.py experiment=minilm_glue $L logger.group=minilm/glue_five_tasks task=$t \
    baselines=[flap,wanda_sp,magnitude,kwon] hydra.run.dir="$OUT/glue_five_tasks/$t"
done
python run.py model=minilm_l6 task=squad_v1 budget=0.6 calib=256 calib_batch_size=16 baselines=[kwon,flap] $L \
  logger.group=minilm/squad_methods hydra.run.dir="$OUT/squad_methods"
python run.py model=minilm_l6 task=squad_v1 budget=0.6 calib=256 calib_batch_size=16 baselines=[] $L \
  logger.group=minilm/squad_eval_time task.finetune.train_limit=1000 task.finetune.epochs=1 task.eval_all=true \
  hydra.run.dir="$OUT/squad_eval_time"
python -m stat_exp.report results/minilm/glue_five_tasks "$OUT/glue_five_tasks" --metric auto
python -m stat_exp.report results/minilm/squad_methods "$OUT/squad_methods" --metric f1_squad_v1 --times
python -m stat_exp.report results/minilm/squad_eval_time "$OUT/squad_eval_time" --metric f1_squad_v1
