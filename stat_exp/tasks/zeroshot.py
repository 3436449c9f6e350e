"""Zero-shot accuracy through lm-eval (the LLM pruning papers' suite: SliceGPT, FLAP, LLM-Pruner, SlimGPT).

The dense and every pruned model are scored in memory (lm-eval's ``HFLM`` around the model object: no save and
reload) on lm-eval's own task definitions: for each task a YAML that ``include``s the stock one and only swaps
the data source for the local JSONL copy (``paths.data_dir``/zeroshot/, the Hugging Face schema each stock task
reads), so prompts, choices and metrics are lm-eval's. A task without a local copy (HellaSwag) is read from the
hub when it is reachable and skipped with one log line when not. ``limit`` (examples per task, lm-eval's own
first-N) sizes the run for a CPU; rows carry it and the lm-eval version. Calibration: ``calib`` windows of
``calib_data`` as for perplexity; FLOPs are priced at ``seqlen``.

=================  ===========================================================================
row key            meaning
=================  ===========================================================================
``acc_<task>``     accuracy (LAMBADA: last-word accuracy; ``ppl_lambada_openai`` its perplexity)
``acc_norm_<task>``  length-normalised accuracy, where lm-eval reports it
``acc_avg``        mean of ``acc_<task>`` over the tasks run (the papers' "average")
=================  ===========================================================================
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from ..data import CORPORA
from ..engine.hub import hub_reachable
from ..errors import UserError
from .base import Setting
from .lm import LMTask

log = logging.getLogger(__name__)

# task -> (stock YAML under lm_eval/tasks, split evaluated, local file under data_dir/zeroshot)
TASKS = {
    "arc_easy": ("arc/arc_easy.yaml", "test", "arc_easy_test.jsonl"),
    "arc_challenge": ("arc/arc_challenge.yaml", "test", "arc_challenge_test.jsonl"),
    "piqa": ("piqa/piqa.yaml", "validation", "piqa_validation.jsonl"),
    "winogrande": ("winogrande/default.yaml", "validation", "winogrande_xl_validation.jsonl"),
    "boolq": ("super_glue/boolq/default.yaml", "validation", "boolq_validation.jsonl"),
    "openbookqa": ("openbookqa/openbookqa.yaml", "test", "openbookqa_test.jsonl"),
    "lambada_openai": ("lambada/lambada_openai.yaml", "test", "lambada_openai_test.jsonl"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "validation", None),
}


def task_yaml(name: str, stock: Path, split: str, data: Path | None) -> str:
    """An lm-eval task YAML: the stock task, reading ``data`` (JSONL) as its only split when given."""
    lines = [f"include: {stock}", f"task: {name}"]
    if data is not None:
        splits = {"training_split": None, "validation_split": None, "test_split": None}
        splits["test_split" if split == "test" else "validation_split"] = split
        lines += ["dataset_path: json", "dataset_name: null",
                  f"dataset_kwargs: {{data_files: {{{split}: '{data}'}}}}",
                  *[f"{k}: {v if v else 'null'}" for k, v in splits.items()]]
    return "\n".join(lines) + "\n"


def write_tasks(names: list[str], data_dir: str, out: Path, online: bool) -> list[str]:
    """Write the YAMLs of ``names`` into ``out``; returns the tasks that can run (offline: local copies only)."""
    import lm_eval

    stock_root = Path(lm_eval.__file__).parent / "tasks"
    ready = []
    for name in names:
        stock, split, file = TASKS[name]
        data = Path(data_dir).expanduser().resolve() / "zeroshot" / file if file else None
        if data is None or not data.exists():
            if not online:
                log.info("zeroshot: %s has no local copy%s and the hub is offline; skipping it", name,
                         f" ({data})" if data else "")
                continue
            data = None  # the stock task, from the hub
        (out / f"{name}.yaml").write_text(task_yaml(name, stock_root / stock, split, data))
        ready.append(name)
    return ready


class ZeroShotTask(LMTask):
    """lm-eval zero-shot accuracy on ``datasets`` (lm-eval task names); see the module table for the row."""

    def __init__(self, cfg: dict, tok, setting: Setting):  # noqa: D107 - LMTask's checks, other eval data
        self.cfg, self.tok, self.setting, self.name = cfg, tok, setting, cfg["name"]
        self.metric = "acc_avg"
        unknown = [d for d in cfg["datasets"] if d not in TASKS]
        if unknown or setting.calib_data not in CORPORA:
            raise UserError(f"unknown zero-shot task(s) {unknown} or calib_data '{setting.calib_data}'; tasks: "
                            f"{', '.join(TASKS)}; corpora: {', '.join(CORPORA)}")
        self._calib, self.sets = None, {}
        self._dir = tempfile.TemporaryDirectory(prefix="stat-exp-zeroshot-")
        self.tasks = write_tasks(list(cfg["datasets"]), setting.data_dir, Path(self._dir.name), hub_reachable())
        if not self.tasks:
            raise UserError(f"none of the zero-shot tasks {cfg['datasets']} has data under "
                            f"{setting.data_dir}/zeroshot and the hub is offline; set paths.data_dir")

    def evaluate(self, model, device) -> dict:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        quiet = logging.getLogger("lm_eval")  # per-request truncation warnings and stage chatter
        level, quiet.level = quiet.level, logging.ERROR
        try:
            lm = HFLM(pretrained=model, tokenizer=self.tok, batch_size=int(self.cfg.get("batch_size", 8)),
                      device=str(device))  # context length: the model's own
            tm = TaskManager(include_path=self._dir.name, include_defaults=False)
            res = lm_eval.simple_evaluate(model=lm, tasks=self.tasks, num_fewshot=0, limit=self.cfg.get("limit"),
                                          task_manager=tm, bootstrap_iters=0, log_samples=False)
        finally:
            quiet.setLevel(level)
        return scores(res["results"], self.cfg.get("limit"), lm_eval.__version__)


def scores(results: dict, limit, version: str) -> dict:
    """Row fields from lm-eval's ``results`` (``{task: {"acc,none": …}}``)."""
    out: dict = {"lm_eval_version": version, "zeroshot_limit": limit}
    for task, r in results.items():
        for key, name in (("acc,none", "acc"), ("acc_norm,none", "acc_norm"), ("perplexity,none", "ppl")):
            if key in r:
                out[f"{name}_{task}"] = float(r[key])
    accs = [v for k, v in out.items() if k.startswith("acc_") and not k.startswith("acc_norm_")]
    out["acc_avg"] = sum(accs) / len(accs)
    return out


TASK = ZeroShotTask
