"""``python -m stat_exp.analyze``: what STAT's choices rest on, for one model (Hydra-configured like ``run.py``,
``conf/analyze.yaml``; the calibration statistics come from the cache when a run made them).

- spectrum: per layer and site, the singular values of the calibration activations Z (from the Gram G = ZᵀZ:
  no second pass) and the interpolative-decomposition error curve e(k)/e(0) of the pivoted order;
  figures ``spectrum.png`` (σ_i/σ_1 against i/n, one line per layer, coloured by depth) and
  ``id_error.png`` (heat map layer × kept fraction).
- propagation: per method at ``analyze.budget``, the relative error of the residual stream after every layer
  on held-out text, ‖h_pruned − h_dense‖/‖h_dense‖ (over all tokens); ``stat`` against ``stat_nocorr`` is
  the correction's effect. Figure ``propagation.png``, one line per method.

| symbol  | shape   | meaning                                                                  |
|---------|---------|--------------------------------------------------------------------------|
| G       | n × n   | a site's Gram of its consumer input on the N calibration tokens          |
| σ       | n       | singular values of Z (√ of G's eigenvalues, descending)                  |
| e(k)²   | U + 1   | STAT's error after keeping the first k pivot units (select.factor)       |
| h_l     | N × d   | residual stream after layer l (the layer module's output)                |

Everything lands in ``analysis.json`` beside the figures.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from . import methods
from .adapters import adapter_for
from .config import method_options, output_dir
from .core.cost import CostModel
from .engine.capture import capture_inputs
from .engine.models import load
from .errors import UserError
from .finetune import task_model
from .methods.stat.statistics import full
from .pipeline import build_task, cache_key, calibrate, prune_copy, seed_everything

log = logging.getLogger("stat_exp.analyze")


def spectrum(G: torch.Tensor) -> torch.Tensor:
    """Singular values (descending, float64) of any Z with ZᵀZ = ``G``."""
    ev = torch.linalg.eigvalsh(G.to(torch.float64))
    return ev.clamp_min(0).sqrt().flip(0)


def id_curve(err2: torch.Tensor) -> torch.Tensor:
    """e(k)/e(0) for k = 0 … U from STAT's squared error curve."""
    e0 = float(err2[0])
    return (err2.double().clamp_min(0) / e0).sqrt() if e0 > 0 else torch.zeros_like(err2, dtype=torch.float64)


def at_fractions(curve: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """A curve over k = 0 … U read at kept fractions (k = round(f·U))."""
    U = len(curve) - 1
    return curve[(fractions * U).round().long()]


def site_analysis(stat) -> list[dict]:
    """Per layer {kind: {'sigma': [...], 'id_error': [...]}} from a calibrated STAT method."""
    layers = stat.ctx.layered([None] * len(stat.ctx.site_keys))
    for i, (li, kind) in enumerate(stat.ctx.site_keys):
        sigma = spectrum(full(stat.stats[li][kind]))
        layers[li][kind] = {"sigma": sigma.tolist(), "id_error": id_curve(stat.factors[i]["err2"]).tolist()}
    return layers


@torch.no_grad()
def residual_errors(dense, pruned, adapter, batches: list[dict], device) -> list[float]:
    """‖h_pruned − h_dense‖/‖h_dense‖ after every layer, over the (unpadded) tokens of ``batches``."""
    outs: dict[str, list] = {}

    def hooks(model, key):
        def hook(_mod, _args, out):
            outs[key].append((out[0] if isinstance(out, tuple) else out).float())
        return [layer.register_forward_hook(hook) for layer in adapter.layers(model)]

    diff = num = None
    for batch in batches:
        mask = batch.get("attention_mask")
        for model, key in ((dense, "dense"), (pruned, "pruned")):
            outs[key] = []
            handles = hooks(model, key)
            try:
                model.to(device)(**{k: v.to(device) for k, v in batch.items()})
            finally:
                for h in handles:
                    h.remove()
        keep = mask.to(device).bool() if mask is not None else None
        d = torch.stack([((p - h)[keep] if keep is not None else p - h).square().sum() for h, p in
                         zip(outs["dense"], outs["pruned"])])
        n = torch.stack([(h[keep] if keep is not None else h).square().sum() for h in outs["dense"]])
        diff, num = (d, n) if diff is None else (diff + d, num + n)
    pruned.to("cpu")
    return (diff / num).sqrt().tolist()


def figures(out: Path, layers: list[dict], propagation: dict, title: str) -> list[Path]:
    """spectrum.png, id_error.png and (when there is propagation data) propagation.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(layers[0])
    cmap, L = plt.get_cmap("viridis"), len(layers)
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for li, layer in enumerate(layers):
            s = torch.tensor(layer[kind]["sigma"])
            ax.semilogy(torch.arange(len(s)) / len(s), s / s[0].clamp_min(1e-300), color=cmap(li / max(L - 1, 1)),
                        lw=1)
        ax.set(title=f"{kind}: singular values of Z", xlabel="index / n", ylabel="σ_i / σ_1")
    fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, L - 1)), ax=axes[0, -1], label="layer")
    fig.suptitle(title)
    paths = [out / "spectrum.png"]
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    f = torch.linspace(0, 1, 41)
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        grid = torch.stack([at_fractions(torch.tensor(layer[kind]["id_error"]), f) for layer in layers])
        im = ax.imshow(grid, aspect="auto", origin="lower", cmap="magma", vmin=0, vmax=1,
                       extent=(0, 1, -0.5, L - 0.5))
        ax.set(title=f"{kind}: ID error e(k)/e(0)", xlabel="fraction of units kept", ylabel="layer")
    fig.colorbar(im, ax=axes[0, -1])
    fig.suptitle(title)
    paths.append(out / "id_error.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    if propagation:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, errs in propagation["errors"].items():
            ax.semilogy(range(len(errs)), errs, marker=".", label=name)
        ax.set(xlabel="layer", ylabel="‖h_pruned − h_dense‖ / ‖h_dense‖",
               title=f"{title}: residual-stream error at budget {propagation['budget']:g}")
        ax.legend()
        paths.append(out / "propagation.png")
        fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
        plt.close(fig)
    return paths


def analyze(cfg: DictConfig) -> dict:
    """Calibrate once (STAT's statistics, cached), then the spectra, ID curves and error propagation."""
    seed_everything(cfg.seed)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    a, out = cfg.analyze, output_dir(cfg)
    budget = float(a.budget)
    if not 0 < budget <= 1:
        raise UserError(f"analyze.budget={budget:g} is outside (0, 1]; e.g. analyze.budget=0.7")
    for name in a.methods:
        methods.resolve(name)  # unknown names fail before loading anything
    if method_options(cfg, "stat", False).get("keep_from"):
        raise UserError("the analysis reads STAT's own pivots and error curves, which method.options.keep_from "
                        "skips: drop keep_from (analyze.methods=[...] picks the methods to compare)")
    task = build_task(cfg)
    model_cfg = task_model(cfg, device)
    model, _ = load(model_cfg)
    adapter = adapter_for(model.config)
    cost = CostModel(cfg.get("budget_kind", "flops"), task.cost_seqlen)
    cap = capture_inputs(model, adapter, task.calibration(), device)
    heldout = task.heldout(int(a.windows))

    def ctx(name):
        cls, resolved = methods.resolve(name, method_options(cfg, name, methods.resolve(name)[0].uses_sketch))
        return methods.Context(model, adapter, cost, device, cfg.seed, cache_dir=cfg.paths.cache_dir,
                               cache_key=cache_key(cfg, model_cfg, task, device),
                               labelled=task.labelled() if cls.wants_labels(resolved) else None)

    def calibrated(name):
        return calibrate(name, method_options(cfg, name, methods.resolve(name)[0].uses_sketch), ctx(name), cap)

    stat = calibrated("stat")
    result = {"model": cfg.model.name, "task": cfg.task.name, "calib": cfg.calib, "calib_data": task.calib_source,
              "seqlen": task.cost_seqlen, "layers": site_analysis(stat)}
    errors = {}
    for name in a.methods:
        method = stat if name == "stat" else calibrated(name)
        pruned, _, _ = prune_copy(method, model, budget)
        errors[name] = residual_errors(model, pruned, adapter, heldout, device)
        log.info("%s at %g: residual-stream error after the last layer %.4f", name, budget, errors[name][-1])
        del pruned
    result["propagation"] = {"budget": budget, "heldout_batches": len(heldout), "errors": errors} if errors else {}
    out.mkdir(parents=True, exist_ok=True)
    (out / "analysis.json").write_text(json.dumps(result))
    paths = figures(out, result["layers"], result["propagation"], cfg.model.name)
    print("\n".join([f"analysis: {out / 'analysis.json'}", *[f"figure:   {p}" for p in paths]]), flush=True)
    return result


def main() -> None:
    """``python -m stat_exp.analyze [overrides]``: the Hydra app on ``conf/analyze.yaml``."""
    import hydra

    from .cli import CONF, fail
    from .config import check_overrides

    @hydra.main(version_base="1.3", config_path=str(CONF), config_name="analyze")
    def app(cfg: DictConfig) -> None:
        try:
            analyze(cfg)
        except UserError as e:
            fail(e)

    try:
        check_overrides(sys.argv[1:], CONF, "analyze")
    except UserError as e:
        fail(e)
    app()


if __name__ == "__main__":
    main()
