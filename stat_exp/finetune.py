"""Fine-tuning recipe: a base encoder -> a task checkpoint (GLUE sequence classification, STS-B regression,
SQuAD extractive QA; the task's module gives ``train_items``). Seeded; AdamW with linear warm-up/decay;
length-bucketed dynamic padding; a progress bar; a checkpoint after every epoch (a killed run resumes from it); the finished checkpoint is cached under
``<root>/<model>-<task>-seed<k>-<recipe hash>/`` and reused by every pruning run with the same recipe.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from .data import collate
from .engine.models import load
from .tasks import module

log = logging.getLogger(__name__)
DONE = "finetune.json"


def checkpoint_dir(root: str, model_name: str, task_name: str, seed: int, recipe: dict) -> Path:
    h = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]
    return Path(root).expanduser() / f"{model_name}-{task_name}-seed{seed}-{h}"


def is_done(path: Path) -> bool:
    return (path / DONE).exists() and (path / "config.json").exists()


def _epoch_batches(items: list[dict], batch_size: int, rng: random.Random, pad_id: int) -> list[dict]:
    """Shuffle, then sort within chunks of 50 batches by length (little padding, still random)."""
    idx = list(range(len(items)))
    rng.shuffle(idx)
    chunk = batch_size * 50
    out = []
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c:c + chunk], key=lambda i: len(items[i]["input_ids"]))
        out += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(out)
    return [collate([items[i] for i in b], pad_id) for b in out]


def _optimizer(model, recipe: dict, steps: int):
    """AdamW (no decay on biases and LayerNorms) with linear warm-up and decay over ``steps``."""
    from transformers import get_linear_schedule_with_warmup

    decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    rest = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.get("weight_decay", 0.01)},
                             {"params": rest, "weight_decay": 0.0}], lr=float(recipe["lr"]))
    return opt, get_linear_schedule_with_warmup(opt, int(recipe.get("warmup", 0.1) * steps), steps)


def _train(model, tok, items: list[dict], recipe: dict, seed: int, device, last: Path, state: dict | None,
           name: str) -> list[float]:
    """The epochs left (resuming from ``state``), a checkpoint in ``last`` after each; the epoch losses."""
    bs, epochs = int(recipe["batch_size"]), int(recipe["epochs"])
    steps = epochs * math.ceil(len(items) / bs)
    model.to(device).train()
    opt, sched = _optimizer(model, recipe, steps)
    start, losses = 0, []
    if state:
        start, losses = state["epoch"], list(state["epoch_loss"])
        opt_state = torch.load(last / "optimizer.pt", weights_only=True)
        opt.load_state_dict(opt_state["opt"])
        sched.load_state_dict(opt_state["sched"])
        torch.set_rng_state(opt_state["rng"])  # dropout continues as if never stopped
    bar = tqdm(total=steps, initial=start * math.ceil(len(items) / bs), desc=f"finetune {name}", mininterval=5)
    for epoch in range(start, epochs):
        ep_rng = random.Random(seed * 1000 + epoch)  # per-epoch order: a resumed run sees the same batches
        loss_sum = 0.0
        batches = _epoch_batches(items, bs, ep_rng, tok.pad_token_id)
        for i, b in enumerate(batches):
            loss = model(**{k: v.to(device) for k, v in b.items()}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += float(loss.detach())
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / (i + 1):.4f}", refresh=False)
        model.eval().save_pretrained(last)
        model.train()
        tok.save_pretrained(last)
        torch.save({"opt": opt.state_dict(), "sched": sched.state_dict(), "rng": torch.get_rng_state()},
                   last / "optimizer.pt")
        losses.append(loss_sum / max(1, len(batches)))
        (last / "state.json").write_text(json.dumps({"epoch": epoch + 1, "epoch_loss": losses}))
    bar.close()
    return losses


def finetune(model_cfg, task_cfg, data_dir: str, root: str, seed: int = 0, device: str = "cpu") -> Path:
    """Fine-tune ``model_cfg`` on ``task_cfg`` with ``task_cfg.finetune`` (the recipe); return the checkpoint
    directory (reused when it is already there)."""
    recipe = OmegaConf.to_container(task_cfg.finetune, resolve=True)
    recipe["base"] = str(model_cfg.id)
    # the checkpoint's own seed (recipe.seed) is fixed by default, so runs that vary the pruning seed (the
    # calibration sample) prune the same fine-tuned model; recipe.seed=null follows the run's seed
    ft_seed = recipe.pop("seed", None)
    seed = seed if ft_seed is None else int(ft_seed)
    path = checkpoint_dir(root, model_cfg.name, task_cfg.name, seed, recipe)
    if is_done(path):
        log.info("fine-tuned checkpoint found: %s", path)
        return path
    random.seed(seed)
    torch.manual_seed(seed)
    head = task_cfg.head
    kw = {}
    if head == "seq_cls":
        kw = {"num_labels": int(task_cfg.num_labels)}
        if task_cfg.num_labels == 1:
            kw["problem_type"] = "regression"
    last = path / "last"
    state = json.loads((last / "state.json").read_text()) if (last / "state.json").exists() else None
    src = {**OmegaConf.to_container(model_cfg, resolve=True), "head": head, "kwargs": kw, "dtype": "float32"}
    if state:
        src["id"] = str(last)
        log.info("resuming fine-tuning from %s (epoch %d done)", last, state["epoch"])
    model, tok = load(OmegaConf.create(src))
    task = OmegaConf.to_container(task_cfg, resolve=True)
    items, split = module(task["kind"]).train_items(task, tok, data_dir, recipe)
    t0 = time.perf_counter()
    losses = _train(model, tok, items, recipe, seed, device, last, state, task_cfg.name)
    model.eval().cpu().save_pretrained(path)
    tok.save_pretrained(path)
    (path / DONE).write_text(json.dumps({"recipe": recipe, "train_split": split, "train_items": len(items),
                                         "seed": seed, "epoch_loss": losses,
                                         "train_s": time.perf_counter() - t0}, indent=1))
    log.info("fine-tuned %s on %s (%d items, %s) in %.0f s -> %s", model_cfg.name, task_cfg.name, len(items),
             split, time.perf_counter() - t0, path)
    return path


def task_model(cfg, device):
    """The model config to prune. A task with a fine-tuning recipe whose head the model does not have (a base
    encoder for GLUE/SQuAD) gets the base model fine-tuned first (cached under paths.checkpoint_dir); a
    checkpoint that already has the task's head is used as is."""
    if not cfg.task.get("finetune") or cfg.model.get("head") == cfg.task.head:
        return cfg.model
    path = finetune(cfg.model, cfg.task, cfg.paths.data_dir, cfg.paths.checkpoint_dir, cfg.seed, device)
    return OmegaConf.create({**OmegaConf.to_container(cfg.model, resolve=True), "id": str(path), "head": cfg.task.head})
