#!/usr/bin/env bash
# Issue 2: SmolLM2-135M, WikiText-2 (first 40 windows of 1024), simple methods at FLOPs kept 0.9/0.8/0.7.
set -euo pipefail
python run.py experiment=smollm2_baselines hydra.run.dir=outputs/issue2_smollm2_baselines "$@"
python -m stat_exp.report results/issue2_smollm2_baselines outputs/issue2_smollm2_baselines --metric ppl_wikitext2
