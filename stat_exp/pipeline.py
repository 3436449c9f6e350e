"""The one pipeline: load → dense eval → calibrate once → per method and budget: prune (slice),
evaluate, log a row → curve. The only module besides run.py that reads the Hydra config."""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import methods as method_registry
from .adapters import get_adapter
from .capture import capture_inputs
from .data import CORPORA, calibration_windows
from . import latency
from .errors import UserError
from .evaluation.perplexity import MAX_WINDOWS, eval_ids, perplexity
from .flops import count_params, model_flops
from .models import load
from .tracking import Tracker, read_rows

log = logging.getLogger(__name__)
GROUPS = ("model", "task", "method", "sketch", "logger", "paths", "experiment", "debug")


def check_overrides(argv: list[str], conf_dir: Path) -> None:
    """Unknown group options (``model=nope``) as one line, before Hydra prints its long report."""
    for arg in argv:
        key, eq, value = arg.partition("=")
        key = key.lstrip("+~")
        if not eq or key not in GROUPS or value in ("null", ""):
            continue
        options = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
        for v in value.split(","):
            if v not in options:
                raise UserError(f"unknown {key} '{v}'; choose one of: {', '.join(options)}")


def _budgets(cfg) -> list[float]:
    raw = cfg.budget
    raw = list(raw) if OmegaConf.is_list(raw) or isinstance(raw, (list, tuple)) else [raw]
    out = []
    for b in raw:
        try:
            b = float(b)
        except (TypeError, ValueError):
            raise UserError(f"budget={b!r} is not a number; pass the fraction of FLOPs kept, e.g. budget=0.5") from None
        if not 0 < b <= 1:
            raise UserError(f"budget={b:g} is outside (0, 1]; pass the fraction of FLOPs kept, e.g. budget=0.5")
        out.append(b)
    return sorted(set(out), reverse=True)


def validate(cfg) -> dict:
    budgets = _budgets(cfg)
    if cfg.get("budget_kind", "flops") not in ("flops", "params"):
        raise UserError(f"budget_kind={cfg.budget_kind!r}; choose flops or params")
    if not isinstance(cfg.calib, int) or cfg.calib < 1:
        raise UserError(f"calib={cfg.calib!r} must be a positive number of calibration sequences, e.g. calib=128")
    names = [cfg.method.name, *(cfg.get("baselines") or [])]
    for n in names:
        if n not in method_registry.METHODS:
            raise UserError(f"unknown method '{n}'; choose one of: {', '.join(sorted(method_registry.METHODS))}")
    for ds in cfg.task.datasets if cfg.task.kind == "lm" else []:
        if ds not in CORPORA:
            raise UserError(f"unknown dataset '{ds}' in task {cfg.task.name}; choose from {', '.join(CORPORA)}")
    if cfg.calib_data not in CORPORA:
        raise UserError(f"unknown calib_data '{cfg.calib_data}'; choose from {', '.join(CORPORA)}")
    return {"budgets": budgets, "methods": list(dict.fromkeys(names))}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def output_dir(cfg) -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # called outside @hydra.main (tests, notebooks)
        return Path(cfg.paths.output_dir)


def sweep_group() -> str | None:
    """Runs of one Hydra multirun share a W&B group: the sweep directory's name (None for a single run)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None
    except Exception:
        return None


def _task(cfg, model, tok, seqlen: int, device):
    """(evaluate(model) -> metrics, calibration batches factory, FLOPs sequence length) for the task."""
    kind = cfg.task.kind
    if kind == "lm":
        sets = {ds: eval_ids(tok, ds, cfg.paths.data_dir) for ds in cfg.task.datasets}

        def evaluate(m):
            res = {}
            for ds, ids in sets.items():
                lim = cfg.eval_windows if cfg.eval_windows else MAX_WINDOWS.get(ds)
                r = perplexity(m, ids, seqlen, lim, cfg.eval_batch_size, device, desc=f"ppl {ds}")
                res[f"ppl_{ds}"], res[f"windows_{ds}"] = r["ppl"], r["windows"]
            return res

        def calib():
            w = calibration_windows(tok, cfg.calib_data, cfg.calib, seqlen, cfg.seed, cfg.paths.data_dir)
            return [{"input_ids": x} for x in w.split(cfg.calib_batch_size)]

        def labelled():  # next-token loss on the calibration windows
            return [{**b, "labels": b["input_ids"]} for b in calib()]

        return evaluate, calib, seqlen, labelled
    if kind == "embed":
        from .evaluation import embedding as E

        dev = E.batches(tok, E.stsb_sentences(cfg.paths.data_dir, "dev"), max_len=seqlen)
        train = E.stsb_sentences(cfg.paths.data_dir, "train")
        if cfg.calib > len(train):
            raise UserError(f"calib={cfg.calib} asks for {cfg.calib} sentences but STS-B train holds {len(train)}; "
                            f"lower calib")
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.calib].tolist()
        cal = E.batches(tok, [train[i] for i in pick], cfg.calib_batch_size, seqlen)
        model.to(device)
        ref = E.embed(model, dev, device)
        model.to("cpu")
        metric = f"{cfg.task.metric}_{cfg.task.datasets[0]}"
        return (lambda m: {metric: E.cosine_to_reference(m, dev, ref, device)}), (lambda: cal), \
            max(1, round(E.mean_length(cal))), None
    if kind == "glue":
        from .evaluation import glue as G

        task = cfg.task.glue_task
        n = int(cfg.task.max_len)
        parts = {}
        for suffix, part in G.eval_parts(task).items():
            ex, split = G.load_split(task, "eval", cfg.paths.data_dir, part)
            bs, order = G.batches(tok, ex, int(cfg.task.eval_batch_size), n)
            parts[suffix] = (bs, order, [e[1] for e in ex])
        train, _ = G.load_split(task, "train", cfg.paths.data_dir)
        if cfg.calib > len(train):
            raise UserError(f"calib={cfg.calib} asks for {cfg.calib} examples but the {task} train split holds "
                            f"{len(train)}; lower calib")
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.calib].tolist()
        picked = [train[i] for i in pick]
        cal, _ = G.batches(tok, picked, cfg.calib_batch_size, n, sort=False, labels=False)

        def evaluate(m):
            res = {}
            for suffix, (bs, order, labels) in parts.items():
                res.update({f"{k}_{task}{suffix}": v for k, v in G.evaluate(m, task, bs, order, labels, device).items()})
            res["eval_split"] = split
            return res

        seq = G.mean_length(next(iter(parts.values()))[0])
        # labelled mini-batches of 32 (Kwon et al.'s GLUE setting) for gradient-based methods
        return evaluate, (lambda: cal), max(1, round(seq)), lambda: G.batches(tok, picked, 32, n, sort=False)[0]
    if kind == "squad":
        from .evaluation import squad as Q

        allex = Q.load_examples(cfg.task.version, cfg.paths.data_dir)
        ex = allex if cfg.task.get("eval_all") else Q.split(allex, "eval")
        ex = ex[: cfg.task.eval_limit] if cfg.task.get("eval_limit") else ex
        feats = Q.features(tok, ex, int(cfg.task.max_len), int(cfg.task.stride))
        bs, order = Q.batches(tok, feats, int(cfg.task.eval_batch_size))
        train = Q.split(allex, "train")
        if cfg.calib > len(train):
            raise UserError(f"calib={cfg.calib} asks for {cfg.calib} questions but the SQuAD training part holds "
                            f"{len(train)}; lower calib")
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.calib].tolist()
        cf = Q.features(tok, [train[i] for i in pick], int(cfg.task.max_len), int(cfg.task.stride))
        items = [cf["inputs"][cf["example"].index(j)] for j in range(len(pick))]  # first window per question
        cal = [Q.collate(items[i:i + cfg.calib_batch_size], tok.pad_token_id)
               for i in range(0, len(items), cfg.calib_batch_size)]
        name = cfg.task.datasets[0]

        def evaluate(m):
            r = Q.evaluate(m, tok, ex, feats, bs, order, device, cfg.task.version, int(cfg.task.n_best),
                           int(cfg.task.max_answer_len), float(cfg.task.null_threshold), progress=True)
            return {f"{k}_{name}": v for k, v in r.items()} | {"eval_split": "dev" if cfg.task.get("eval_all")
                                                             else "dev-heldout", "eval_questions": len(ex)}

        def labelled():  # first window of each calibration question with its answer span; batches of 12 (Kwon)
            tf = Q.features(tok, [train[i] for i in pick], int(cfg.task.max_len), int(cfg.task.stride), train=True)
            first = [tf["example"].index(j) for j in range(len(pick))]
            its = [{**tf["inputs"][f], "start_positions": tf["start"][f], "end_positions": tf["end"][f]} for f in first]
            return [Q.collate(its[i:i + 12], tok.pad_token_id) for i in range(0, len(its), 12)]

        seq = sum(len(i["input_ids"]) for i in feats["inputs"]) / max(1, len(feats["inputs"]))
        return evaluate, (lambda: cal), max(1, round(seq)), labelled
    raise UserError(f"task kind '{kind}' is not supported here; kinds: lm, embed, glue, squad")


def task_model(cfg, device):
    """The model config to prune: for GLUE/SQuAD a task checkpoint. A model whose ``head`` already is the
    task's head (a user's fine-tuned checkpoint) is used as is; otherwise the base model is fine-tuned with
    the task's recipe (cached under paths.checkpoint_dir)."""
    if cfg.task.kind not in ("glue", "squad") or cfg.model.get("head") == cfg.task.head:
        return cfg.model
    from .finetune import finetune

    path = finetune(cfg.model, cfg.task, cfg.paths.data_dir, cfg.paths.checkpoint_dir, cfg.seed, device)
    return OmegaConf.create({**OmegaConf.to_container(cfg.model, resolve=True), "id": str(path), "head": cfg.task.head})


def run_experiment(cfg: DictConfig) -> list[dict]:
    """Run one configured experiment; returns the rows it logged (rows already on disk are skipped)."""
    spec = validate(cfg)
    out = output_dir(cfg)
    done = {(r["method"], r["budget"]) for r in read_rows(out / "results.jsonl")}
    todo = [(m, b) for m in spec["methods"] for b in spec["budgets"] if (m, b) not in done]
    if not todo and ("dense", 1.0) in done:
        log.info("all rows already in %s; nothing to do", out / "results.jsonl")
        return []
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    metric = f"{cfg.task.metric}_{cfg.task.datasets[0]}"
    group = (cfg.logger.get("group") if cfg.get("logger") else None) or sweep_group()
    tracker = Tracker(out, OmegaConf.to_container(cfg, resolve=True), cfg.logger.get("wandb") if cfg.get("logger") else None,
                      name=out.name, group=group)
    rows: list[dict] = []
    try:
        t = time.perf_counter()
        model_cfg = task_model(cfg, device)
        model, tok = load(model_cfg)
        adapter = get_adapter(model)
        ctx_len = getattr(model.config, "max_position_embeddings", cfg.seqlen)
        seqlen = min(int(cfg.seqlen), int(ctx_len))
        timings = {"load_s": time.perf_counter() - t}
        evaluate_metrics, calib_batches, seqlen, labelled = _task(cfg, model, tok, seqlen, device)
        dense = model_flops(adapter, model, seqlen)
        dense_params = count_params(model)
        base = {"model": cfg.model.name, "task": cfg.task.name, "metric": metric, "calib": cfg.calib, "seqlen": seqlen,
                "seed": cfg.seed, "calib_data": cfg.task.name if cfg.task.kind in ("glue", "squad", "embed")
                else cfg.calib_data}

        def evaluate(m) -> dict:
            t0 = time.perf_counter()
            m.to(device)
            res = evaluate_metrics(m)
            m.to("cpu")
            res["eval_s"] = time.perf_counter() - t0
            return res

        lat = cfg.get("latency") or {}
        lat_batch = (latency.inputs(model.config.vocab_size, int(lat.batch_size), int(lat.seqlen or seqlen), cfg.seed)
                     if lat.get("enabled") else None)
        dense_ms = []

        def measure(m) -> float:
            ms = latency.latency_ms(m, lat_batch, device, int(lat.warmup), int(lat.repeats))
            m.to("cpu")
            return ms

        def timed(m) -> dict:
            if lat_batch is None:
                return {}
            if not dense_ms:  # the dense model once, also when its row was logged by an earlier run
                dense_ms.append(measure(model))
            ms = dense_ms[0] if m is model else measure(m)
            return {"latency_ms": ms, "speedup": dense_ms[0] / ms, "latency_shape": list(lat_batch["input_ids"].shape)}

        def row(method, budget, m, extra) -> dict:
            extra = {**extra, **timed(m)}
            f = model_flops(adapter, m, seqlen)
            r = {**base, "method": method, "budget": budget, "flops_ratio": f["prunable"] / dense["prunable"],
                 "flops_total_ratio": f["total"] / dense["total"], "params": count_params(m),
                 "params_ratio": count_params(m) / dense_params, **extra}
            tracker.log(r)
            rows.append(r)
            log.info("%s budget=%.2f flops=%.3f %s=%.3f", method, budget, r["flops_ratio"], metric, r.get(metric, float("nan")))
            return r

        if ("dense", 1.0) not in done and cfg.dense:
            row("dense", 1.0, model, {**evaluate(model), **timings})
        if not todo:
            return rows
        t = time.perf_counter()
        cap = capture_inputs(model, adapter, calib_batches(), device)
        timings["capture_s"] = time.perf_counter() - t
        for name in spec["methods"]:
            budgets = [b for b in spec["budgets"] if (name, b) not in done]
            if not budgets:
                continue
            opts = {}
            if name == cfg.method.name and cfg.method.get("options") is not None:
                opts = OmegaConf.to_container(cfg.method.options, resolve=True)
            if name.startswith("stat"):
                opts.setdefault("sketch", cfg.sketch.kind)
                opts.setdefault("sketch_dim", cfg.sketch.dim)
            method = method_registry.build(name, **opts)
            # budget_kind=params: a unit's cost at sequence length 0 is 2 × its parameters (no attention scores)
            cost_len = 0 if cfg.get("budget_kind", "flops") == "params" else seqlen
            ctx = method_registry.Context(model, adapter, cost_len, device, cfg.seed, cache_dir=cfg.paths.cache_dir,
                                          cache_key={"model": str(model_cfg.id), "tiny": str(cfg.model.get("tiny")),
                                                     "data": base["calib_data"], "calib": cfg.calib, "seqlen": seqlen,
                                                     "seed": cfg.seed, "dtype": cfg.model.get("dtype")},
                                          labelled=labelled() if labelled and name == "kwon" else None)
            t = time.perf_counter()
            method.calibrate(ctx, dataclasses.replace(cap, hidden=list(cap.hidden)))
            t_cal = time.perf_counter() - t
            for b in budgets:
                t = time.perf_counter()
                pruned = copy.deepcopy(model).cpu()
                plan = method.prune(pruned, b)
                t_prune = time.perf_counter() - t
                r = row(name, b, pruned, {**evaluate(pruned), "capture_s": timings["capture_s"],
                                          "calibrate_s": t_cal, "prune_s": t_prune,
                                          **{f"stage_{k}": v for k, v in getattr(method, "timings", {}).items()}})
                if cfg.save_model:
                    d = out / f"pruned_{name}_{b:g}"
                    pruned.save_pretrained(d)
                    tok.save_pretrained(d)
                    (d / "plan.json").write_text(json.dumps(plan.to_json()))
                    log.info("saved %s (reload: AutoModelForCausalLM.from_pretrained after `import stat_exp`)", d)
                del pruned, r
        return rows
    finally:
        tracker.finish(metric)
        tracker.close()
