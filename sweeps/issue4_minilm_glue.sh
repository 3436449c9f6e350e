#!/usr/bin/env bash
# Issue 4 as run on the 2-core CPU: MiniLM-L6 fine-tuned per task with the task configs' default (CPU-sized)
# recipes (lr 1e-4; SST-2 on a seeded 8k-example subset for 1 epoch, STS-B on 3k for 2 epochs, MRPC and RTE 2
# epochs), then pruned at FLOPs kept 0.7/0.6/0.5/0.4: STAT vs flap, wanda_sp, magnitude (calib 512 train examples).
# Then SQuAD v1.1: fine-tuned on 1000 questions of the first 24 dev articles, evaluated on the first 1000 questions of the other 24.
set -euo pipefail
for t in sst2 mrpc stsb rte; do
  python run.py experiment=minilm_glue logger=none task=$t hydra.run.dir=outputs/issue4_glue/$t
done
python run.py model=minilm_l6 task=squad_v1 method=stat baselines=[] budget=0.6 calib=256 calib_batch_size=16 \
  logger=none task.finetune.train_limit=1000 task.finetune.epochs=1 task.eval_limit=1000 hydra.run.dir=outputs/issue4_squad
python -m stat_exp.report results/issue4_minilm_glue outputs/issue4_glue/* --metric auto
python -m stat_exp.report results/issue4_minilm_squad outputs/issue4_squad --metric f1_squad_v1
