"""Recovery fine-tuning after pruning (``recover=lora``): LoRA adapters (peft) on every plain Linear of the pruned
model's layers, trained with the next-token loss on language-model windows disjoint from the calibration windows,
then merged back into the weights, so the model keeps its pruned shapes and saves and loads as before.

| name     | meaning                                                                              |
|----------|--------------------------------------------------------------------------------------|
| r, α     | LoRA rank and scale: W ← W + (α/r)·B A, A: r × in, B: out × r (B starts at zero)      |
| steps    | optimizer steps (AdamW on A and B only; linear warm-up over 10 %, then linear decay)  |
| batch    | windows per step; steps · batch windows are drawn, none of them a calibration window  |

The row keeps the settings, the time, the training loss at the start and end, and the task's scores before recovery
(``<metric>_before_recovery``) beside the scores after.
"""
from __future__ import annotations

import logging
import time

import torch
from torch import nn

from .errors import UserError
from .progress import progress

log = logging.getLogger(__name__)
KINDS = ("none", "lora")


def targets(model: nn.Module, adapter) -> list[str]:
    """Full names of the plain ``nn.Linear`` modules inside the model's layers that still have inputs and outputs
    (a K/V projection gathered per query head, or a Linear pruned to nothing, is left as it is)."""
    layers = {id(layer) for layer in adapter.layers(model)}
    names = []
    for name, mod in model.named_modules():
        if id(mod) in layers:
            names += [f"{name}.{sub}" for sub, m in mod.named_modules()
                      if type(m) is nn.Linear and m.in_features > 0 and m.out_features > 0]
    return names


def adapt(model: nn.Module, adapter, windows: torch.Tensor, rank: int = 8, alpha: float = 16.0, steps: int = 64,
          batch: int = 1, lr: float = 3e-4, seed: int = 0, device: str = "cpu") -> tuple[nn.Module, list[float]]:
    """Train LoRA adapters (``targets``) on ``windows`` ((≥ steps·batch, T) token ids, drawn in a seeded order);
    returns (the peft model wrapping ``model``, the loss of every step)."""
    from peft import LoraConfig, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    if len(windows) < steps * batch:
        raise UserError(f"recover: {steps} steps of {batch} windows need {steps * batch} windows, {len(windows)} given")
    names = targets(model, adapter)
    if not names:
        raise UserError("recover=lora found no Linear to adapt in the pruned model's layers; use recover=none")
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=names))
    peft_model.to(device).train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, max(1, steps // 10), steps)
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))[: steps * batch]
    losses = []
    for s in progress(range(steps), "recover: LoRA", unit="step"):
        x = windows[order[s * batch:(s + 1) * batch]].to(device)
        loss = peft_model(input_ids=x, labels=x, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return peft_model.eval(), losses


def lora(model: nn.Module, adapter, windows: torch.Tensor, rank: int = 8, alpha: float = 16.0, steps: int = 64,
         batch: int = 1, lr: float = 3e-4, seed: int = 0, device: str = "cpu") -> tuple[nn.Module, dict]:
    """``adapt``, then merge the adapters into the weights; returns (model, info): the same module classes and
    shapes as ``model``, every parameter frozen as before."""
    req = {k: p.requires_grad for k, p in model.named_parameters()}
    t = time.perf_counter()
    peft_model, losses = adapt(model, adapter, windows, rank, alpha, steps, batch, lr, seed, device)
    merged = peft_model.merge_and_unload().eval().to("cpu")
    for k, p in merged.named_parameters():
        p.requires_grad_(req.get(k, False))
    k = max(1, steps // 8)
    info = {"recover": "lora", "recover_rank": rank, "recover_alpha": alpha, "recover_steps": steps,
            "recover_batch": batch, "recover_lr": lr, "recover_tokens": int(windows[:1].numel()) * steps * batch,
            "recover_modules": len(targets(merged, adapter)), "recover_s": time.perf_counter() - t,
            "recover_loss_start": sum(losses[:k]) / k, "recover_loss_end": sum(losses[-k:]) / k}
    log.info("recover: LoRA r=%d on %d Linears, %d steps × %d windows in %.0f s; loss %.3f -> %.3f", rank,
             info["recover_modules"], steps, batch, info["recover_s"], info["recover_loss_start"],
             info["recover_loss_end"])
    return merged, info


def recover(cfg: dict, task, model: nn.Module, adapter, device: str, seed: int, evaluate) -> tuple[nn.Module, dict]:
    """The run's recovery step (``cfg``: the ``recover`` config group) on a pruned ``model``: {} and the model
    unchanged for ``none``; for ``lora`` the scores before (``evaluate(model)``), then ``lora`` on windows of the
    task's recovery data (``task.recovery_windows``)."""
    kind = cfg.get("name", "none")
    if kind == "none":
        return model, {}
    before = {f"{k}_before_recovery": v for k, v in evaluate(model).items() if isinstance(v, (int, float))}
    steps, batch = int(cfg["steps"]), int(cfg["batch"])
    windows = task.recovery_windows(steps * batch)
    model, info = lora(model, adapter, windows, int(cfg["rank"]), float(cfg["alpha"]), steps, batch,
                       float(cfg["lr"]), seed, device)
    return model, {**before, **info}
