"""The one pipeline, a recipe: validate → load → task → dense row → calibrate once → per method and
budget: plan and slice, evaluate, check the budget, log a row → curve. It reads the Hydra config (with
``config``); methods, tasks, the engine and the core below it take plain values."""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import cache, files, methods, tasks
from .adapters import adapter_for
from .config import command_line, method_options, output_dir, sweep_group, validate
from .core.cost import CostModel, count_params, model_flops
from .engine.capture import capture_inputs
from .engine.models import load, load_config, load_tokenizer, resolve_dtype
from .engine.card import card_info, unit_counts
from .engine import quant
from .engine.placement import compute_dtype, on_device
from .engine.saving import save_pruned, saved
from .engine.surgery import attention_units, shared_copy
from .finetune import task_model
from .latency import Probe
from .recover import recover
from .tracking import Tracker, read_rows, summary

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_task(cfg) -> tasks.Task:
    """The task, from the model's config and tokenizer alone (no weights): data read, calibration drawn."""
    config = load_config(cfg.model)
    adapter_for(config)  # an unknown family fails here, in seconds
    ctx_len = getattr(config, "max_position_embeddings", None) or cfg.seqlen
    setting = tasks.Setting(str(cfg.paths.data_dir), int(cfg.calib), int(cfg.seed), min(int(cfg.seqlen), int(ctx_len)),
                            int(cfg.calib_batch_size), str(cfg.calib_data), cfg.eval_windows, int(cfg.eval_batch_size),
                            str(cfg.get("eval_bos", "auto")), str(config.model_type))
    return tasks.build(OmegaConf.to_container(cfg.task, resolve=True), load_tokenizer(cfg.model), setting)


def cache_key(cfg, model_cfg, task: tasks.Task, device) -> dict:
    """What a run's calibration statistics depend on (the key of the statistics cache): the model, the
    calibration data, and where and in which precision they were computed (a GPU's TF32 products and a CPU's
    fp32 ones are not the same statistics)."""
    dtype = resolve_dtype(cfg.model)
    return {"model": str(model_cfg.id), "tiny": str(cfg.model.get("tiny")), "data": task.calib_source,
            "calib": cfg.calib, "seqlen": task.cost_seqlen, "seed": cfg.seed, "dtype": dtype,
            "device": torch.device(device).type, "compute_dtype": str(compute_dtype(getattr(torch, dtype), device)),
            "matmul_precision": torch.get_float32_matmul_precision()}


def dense_key(cfg, model_cfg, device) -> dict:
    """What the dense row's scores depend on: the model, the task and its evaluation protocol, the precision
    (not the calibration: every job of ``-m calib=…`` shares it)."""
    model = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    task = {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "label_batch_size"}
    return {"model": model, "task": task, "seqlen": cfg.seqlen, "eval_windows": cfg.eval_windows,
            "eval_batch_size": cfg.eval_batch_size, "eval_bos": str(cfg.get("eval_bos", "auto")),
            "dtype": resolve_dtype(cfg.model), "quant": quant_bits(cfg), "device": torch.device(device).type,
            "data_dir": str(Path(cfg.paths.data_dir).resolve()), "v": 1}


def dense_scores(cfg, key: dict, score) -> dict:
    """``score()`` (the dense model's metrics), from the cache when another job already evaluated the same
    model, task and protocol (``cache.fetch``: concurrent jobs wait for the first); computed when the run
    has no cache directory."""
    if not cfg.paths.get("cache_dir"):
        return score()
    h = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cfg.paths.cache_dir) / f"dense-{h}.json"
    entry = cache.fetch(path, lambda: {"key": key, "scores": score()},
                        lambda obj, tmp: tmp.write_text(json.dumps(obj, default=str)),
                        lambda p: json.loads(p.read_text()))
    return entry["scores"]


def reference(adapter, model, cost: CostModel) -> dict:
    """The dense model's FLOPs, parameters and constrained cost, against which pruned models are measured."""
    return {"flops": model_flops(adapter, model, cost.seqlen), "params": count_params(model),
            "cost": cost.total(adapter, model)}


def measure(adapter, model, cost: CostModel, dense: dict, method: str, budget: float) -> dict:
    """What a pruned model keeps of ``dense`` (``achieved`` = the constrained quantity's ratio, which must not
    exceed ``budget``: a method that overshoots raises; ``kept_units``: each layer's units per site kind)."""
    f, achieved = model_flops(adapter, model, cost.seqlen), cost.ratio(adapter, model, dense["cost"])
    if not CostModel.within(achieved, budget):
        raise RuntimeError(f"{method} overshot its budget: kept {achieved:.6f} of the layers' {cost.kind} "
                           f"at budget {budget:g}")
    return {"method": method, "budget": budget, "budget_kind": cost.kind, "achieved": achieved,
            "flops_ratio": f["prunable"] / dense["flops"]["prunable"],
            "flops_total_ratio": f["total"] / dense["flops"]["total"],
            "params": count_params(model), "params_ratio": count_params(model) / dense["params"],
            "kept_units": unit_counts(adapter, model)}


class Rows:
    """Builds, checks (``measure``) and logs the rows of one run: the metric, FLOPs and parameters kept,
    the achieved ratio of the constrained quantity, latency and timings."""

    def __init__(self, tracker, model, adapter, cost: CostModel, base: dict, probe: Probe):
        self.tracker, self.adapter, self.cost, self.base, self.probe = tracker, adapter, cost, base, probe
        self.dense = reference(adapter, model, cost)
        self.logged: list[dict] = []

    def build(self, method: str, budget: float, model, extra: dict) -> dict:
        """The row of ``model`` (checked against its budget), not yet logged."""
        return {**self.base, **measure(self.adapter, model, self.cost, self.dense, method, budget), **extra,
                **self.probe.fields(model)}

    def log(self, method: str, budget: float, model, extra: dict, row: dict | None = None) -> dict:
        r = row if row is not None else self.build(method, budget, model, extra)
        self.tracker.log(r)
        self.logged.append(r)
        m = self.base["metric"]
        log.info("%s budget=%.2f achieved=%.3f %s=%.4g", method, budget, r["achieved"], m, r.get(m, float("nan")))
        return r


def quant_bits(cfg) -> int | None:
    """The ``quant`` group's bits (None: no quantization, also for configs without the group)."""
    q = cfg.get("quant")
    return None if q is None or q.get("bits") is None else int(q.bits)


def quantized(model, adapter, bits: int | None, copy_first: bool):
    """``model`` with its layer Linears quantized to ``bits`` (a copy when ``copy_first``), and the row fields."""
    if bits is not None and copy_first:
        model = copy.deepcopy(model)
    return model, quant.quantize(model, adapter, bits)


def evaluate(task: tasks.Task, model, adapter, device) -> dict:
    """The task's metrics for ``model`` on ``device`` (whole, or streamed a layer at a time: ``placement``)."""
    t = time.perf_counter()
    with on_device(model, adapter.layers(model), device):
        res = task.evaluate(model, device)
    return {**res, "eval_s": time.perf_counter() - t}


@dataclass
class Shared:
    """What every method of a run shares: the dense model, its task, calibration inputs and row logger."""

    model: object
    tok: object
    adapter: object
    task: tasks.Task
    cost: CostModel
    cap: object
    rows: Rows
    device: str
    cache_key: dict
    timings: dict


def calibrate(name: str, options: dict, ctx: methods.Context, cap) -> methods.Method:
    """Build method ``name`` with ``options`` and calibrate it once on the dense model of ``ctx``."""
    method = methods.build(name, options)
    method.calibrate(ctx, cap)
    return method


def prune_copy(method: methods.Method, model, budget: float):
    """A pruned copy of ``model`` at ``budget`` (the dense model is untouched); returns (model, plan, timings)."""
    t = time.perf_counter()
    pruned = shared_copy(model)
    plan = method.prune(pruned, budget)
    stages = {f"stage_{k}": v for k, v in getattr(method, "timings", {}).items()}
    return pruned, plan, {"prune_s": time.perf_counter() - t, **stages}


def run_method(cfg, name: str, budgets: list[float], s: Shared, out) -> None:
    """Calibrate ``name`` once on the dense model, then per budget: prune a copy, evaluate, log, save."""
    cls, _ = methods.resolve(name)
    options = method_options(cfg, name, cls.uses_sketch)
    resolved = methods.resolve(name, options)[1]
    ctx = methods.Context(s.model, s.adapter, s.cost, s.device, cfg.seed, cache_dir=cfg.paths.cache_dir,
                          cache_key=s.cache_key, cache_max_bytes=int(float(cfg.paths.get("cache_max_gb", 4)) * 2**30),
                          labelled=s.task.labelled(resolved.get("samples")) if cls.wants_labels(resolved) else None,
                          unseen=s.task.unseen(n * cfg.calib_batch_size, cfg.calib_batch_size)
                          if (n := cls.wants_unseen(resolved, len(s.cap.hidden))) else None)
    t = time.perf_counter()
    method = calibrate(name, options, ctx, s.cap)
    timings = {**s.timings, "calibrate_s": time.perf_counter() - t}
    for b in budgets:
        pruned, plan, spent = prune_copy(method, s.model, b)
        pruned, recovered = recover(cfg.recover, s.task, pruned, s.adapter, s.device, cfg.seed,
                                    lambda m: evaluate(s.task, m, s.adapter, s.device))
        pruned, qinfo = quantized(pruned, s.adapter, quant_bits(cfg), copy_first=False)
        scores = evaluate(s.task, pruned, s.adapter, s.device)
        row = s.rows.build(name, b, pruned, {**scores, **timings, **spent, **method.row_info(), **qinfo, **recovered})
        if cfg.save_model:  # saved before the row is logged: a logged row always has its model
            dense = next((r for r in read_rows(out / "results.jsonl") if r["method"] == "dense"), {})
            pruned.stat_scores = scores
            pruned.stat_card = card_info(
                s.model, pruned, s.adapter, row, method=name, options=dict(method.options), calib=cfg.calib,
                calib_data=row["calib_data"], seqlen=row["seqlen"], base_model=cfg.model.get("hub_id") or cfg.model.id,
                model=cfg.model.name, command=command_line(), dense_scores={k: dense.get(k) for k in scores})
            save_pruned(saved_dir(out, name, b), pruned, s.tok, plan)
        s.rows.log(name, b, pruned, {}, row=row)
        del pruned


def saved_dir(out: Path, method: str, budget: float) -> Path:
    return out / f"pruned_{method}_{budget:g}"


def finished(cfg, out: Path) -> set:
    """(method, budget) of the rows already in ``out``; with ``save_model``, only those whose model was saved
    completely (a row whose save is missing is redone)."""
    done = {(r["method"], r["budget"]) for r in read_rows(out / "results.jsonl")}
    if cfg.save_model:
        done = {(m, b) for m, b in done if m == "dense" or saved(saved_dir(out, m, b))}
    return done


def run_experiment(cfg: DictConfig) -> list[dict]:
    """Run one configured experiment; returns the rows it logged (rows already on disk are skipped)."""
    spec = validate(cfg)
    out = output_dir(cfg)
    files.sweep(out)  # partial saves of a killed run
    done = finished(cfg, out)
    todo = [(m, b) for m in spec["methods"] for b in spec["budgets"] if (m, b) not in done]
    if not todo and (("dense", 1.0) in done or not cfg.dense):
        log.info("all rows already in %s; nothing to do", out / "results.jsonl")
        print(summary(out), flush=True)
        return []
    seed_everything(cfg.seed)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    bits = quant_bits(cfg)
    quant.check(bits, getattr(torch, resolve_dtype(cfg.model)), device)
    t = time.perf_counter()
    task = build_task(cfg)
    calibration = task.calibration()
    model_cfg = task_model(cfg, device)
    model, tok = load(model_cfg)
    timings = {"load_s": time.perf_counter() - t}
    adapter = adapter_for(model.config)
    attention_units(model, cfg.get("attn_units", "kv_group"), adapter)
    task.prepare(model, device)
    cost = CostModel(cfg.get("budget_kind", "flops"), task.cost_seqlen)
    base = {"model": cfg.model.name, "task": cfg.task.name, "metric": task.metric, "calib": cfg.calib,
            "seqlen": task.cost_seqlen, "seed": cfg.seed, "calib_data": task.calib_source,
            "attn_units": cfg.get("attn_units", "kv_group"), "dtype": resolve_dtype(cfg.model)}
    logger = cfg.logger if cfg.get("logger") else {}
    with Tracker(out, OmegaConf.to_container(cfg, resolve=True), logger.get("wandb"), name=out.name,
                 group=logger.get("group") or sweep_group(), metric=task.metric) as tracker:
        rows = Rows(tracker, model, adapter, cost, base, Probe(model, cfg.get("latency"), task.cost_seqlen, cfg.seed,
                                                                device))
        if ("dense", 1.0) not in done and cfg.dense:
            dense, qinfo = quantized(model, adapter, bits, copy_first=True)
            scores = dense_scores(cfg, dense_key(cfg, model_cfg, device), lambda: evaluate(task, dense, adapter, device))
            rows.log("dense", 1.0, dense, {**scores, **timings, **qinfo})
            del dense
        t = time.perf_counter()
        cap = capture_inputs(model, adapter, calibration, device) if todo else None
        key = cache_key(cfg, model_cfg, task, device)
        shared = Shared(model, tok, adapter, task, cost, cap, rows, device, key, {"capture_s": time.perf_counter() - t})
        try:
            for name in spec["methods"]:
                budgets = [b for b in spec["budgets"] if (name, b) not in done]
                if budgets:
                    run_method(cfg, name, budgets, shared, out)
        finally:
            cache.release_all()  # this run's entries may be evicted by others again
    print(summary(out), flush=True)
    return rows.logged
