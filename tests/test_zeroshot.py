"""Zero-shot accuracy through lm-eval: every local task file loads offline through lm-eval's own task
definitions, and a tiny model's row is produced end to end (dense and pruned, in memory)."""
import pytest

from conftest import DATA, compose, need_data
from stat_exp.pipeline import run_experiment
from stat_exp.tasks.zeroshot import TASKS, scores, write_tasks

# rows per local file (the data's manifest)
ROWS = {"arc_easy": 2376, "arc_challenge": 1172, "piqa": 1838, "winogrande": 1267, "boolq": 3270,
        "openbookqa": 500, "lambada_openai": 5153}


def test_every_local_task_loads_offline(tmp_path):
    need_data(*[f"zeroshot/{TASKS[t][2]}" for t in ROWS])
    from lm_eval.tasks import TaskManager, get_task_dict

    ready = write_tasks(list(TASKS), str(DATA), tmp_path, online=False)
    assert ready == list(ROWS)  # hellaswag has no local copy: skipped offline
    tasks = get_task_dict(ready, TaskManager(include_path=str(tmp_path), include_defaults=False))
    for name, task in tasks.items():
        docs = list(task.eval_docs)
        assert len(docs) == ROWS[name], name
        for doc in docs:  # lm-eval's prompt, target and choices render on every row, the gold in range
            target = task.doc_to_target(doc)
            assert task.doc_to_text(doc) is not None and target is not None
            if isinstance(target, str) and not target.isdigit():
                assert target.strip(), (name, doc)  # LAMBADA's last word; WinoGrande's shared continuation
            else:
                assert 0 <= int(target) < len(task.doc_to_choice(doc)), (name, doc)


def test_scores_average_accuracy_not_acc_norm():
    r = scores({"a": {"acc,none": 0.5, "acc_norm,none": 0.9}, "b": {"acc,none": 0.25, "perplexity,none": 3.0}},
               10, "0.4.13")
    assert r["acc_avg"] == pytest.approx(0.375) and r["acc_norm_a"] == 0.9 and r["ppl_b"] == 3.0
    assert r["zeroshot_limit"] == 10 and r["lm_eval_version"] == "0.4.13"


def test_tiny_model_zeroshot_rows_end_to_end(tmp_path):
    need_data("c4/c4-train.00000-of-01024.first1041.jsonl", *[f"zeroshot/{TASKS[t][2]}" for t in ROWS])
    cfg = compose(["model=tiny_llama", "task=zeroshot", "task.limit=2", "budget=0.5", "calib=2", "logger=none",
                   f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}/cache"])
    rows = {r["method"]: r for r in run_experiment(cfg)}
    assert set(rows) == {"dense", "stat"}
    for r in rows.values():
        assert r["metric"] == "acc_avg" and r["zeroshot_limit"] == 2 and r["lm_eval_version"]
        accs = [r[f"acc_{t}"] for t in ROWS]
        assert all(0 <= a <= 1 for a in accs) and r["acc_avg"] == pytest.approx(sum(accs) / len(accs))
        assert "acc_hellaswag" not in r
    assert rows["stat"]["flops_ratio"] <= 0.5 + 1e-9
