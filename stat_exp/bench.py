"""Benchmark the STAT stages on a randomly initialised model of a named shape (no download).

    python -m stat_exp.bench shape=llama2_7b calib=256 seqlen=2048 [device=cuda] [dtype=bfloat16]
                             [place=cpu|device] [budget=0.5] [batch=8] [sketch=gram] [sketch_dim=2x] [layers=N]

``place=cpu`` (default) keeps the model on the host and moves one layer at a time to the device,
as the pipeline does, so peak device memory is about one layer plus activations and statistics.
First it measures the machine's matmul peak (GFLOP/s of an n × n product, fp32 and bf16, with the threads
torch uses), then prints each stage's time and, where its FLOPs are known, its achieved GFLOP/s and fraction
of the peak at the model's dtype: ``eval`` (one forward of ``batch`` windows), ``statistics`` (the layer
forwards of the calibration tokens plus the Gram products ZᵀZ of every site). Factorisation and fold are
reported as fractions of the statistics stage. ``layers=N`` builds only N of the shape's layers: every stage
but the evaluation's LM head is a sum over layers, so a 7B shape's ratios fit a small host. Prints a JSON
summary last; exit code 0 (a bad argument: one ``error:`` line, exit 2). Not a test: timings vary by machine;
run it with nothing else on the machine.
"""
from __future__ import annotations

import json
import sys
import time

import torch

SHAPES = {  # family, hidden, layers, heads, kv_heads, ffn, vocab
    "llama2_7b": ("llama", 4096, 32, 32, 32, 11008, 32000),
    "llama3_8b": ("llama", 4096, 32, 32, 8, 14336, 128256),
    "smollm2_135m": ("llama", 576, 30, 9, 3, 1536, 49152),
    "qwen25_1_5b": ("llama", 1536, 28, 12, 2, 8960, 151936),
    "opt_125m": ("opt", 768, 12, 12, 12, 3072, 50272),
    "bert_base": ("bert", 768, 12, 12, 12, 3072, 30522),
    "bert_large": ("bert", 1024, 24, 16, 16, 4096, 30522),
    "distilbert": ("distilbert", 768, 6, 12, 12, 3072, 30522),
}


def matmul_peak(device: str, dtype, max_n: int = 2048, seconds: float = 1.0) -> float:
    """GFLOP/s of repeated square products in ``dtype`` on ``device`` (best of the repeats). The size doubles
    from 256 until one product takes 0.1 s or reaches ``max_n``, so a slow dtype (bf16 on a CPU without bf16
    instructions: about 1 GFLOP/s) costs seconds, not minutes."""
    from .latency import elapsed

    n = 256
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        t = time.perf_counter()
        a @ b
        if elapsed(t, device) >= 0.1 or n >= max_n:
            break
        n *= 2
    best, spent = float("inf"), 0.0
    while spent < seconds:
        t = time.perf_counter()
        a @ b
        dt = elapsed(t, device)
        best, spent = min(best, dt), spent + dt
    return 2 * n ** 3 / best / 1e9


def stage_flops(model, adapter, tokens: int, seqlen: int) -> dict:
    """FLOPs of the measured stages on ``tokens`` tokens (attention priced at ``seqlen``): ``forward`` (the
    layers), ``eval`` (the whole model: layers and LM head) and ``gram`` (ZᵀZ of every site's consumer input,
    as executed: the upper block triangle, ``linalg.upper_gram_flops``)."""
    from .core.cost import model_flops
    from .core.linalg import upper_gram_flops

    gram = sum(upper_gram_flops(tokens, s.consumer_linear.in_features) for layer in adapter.layers(model)
               for s in adapter.sites(layer).values())
    f = model_flops(adapter, model, seqlen)
    return {"forward": tokens * f["prunable"], "eval": tokens * f["total"], "gram": gram}


def build(shape: str, dtype, where: str, seed: int = 0, layers: int | None = None):
    from .engine.models import tiny_config
    import transformers

    fam, h, L, nh, kv, ffn, vocab = SHAPES[shape]
    L = layers or L
    cfg = tiny_config(fam, hidden=h, layers=L, heads=nh, kv_heads=kv, ffn=ffn, vocab=vocab, max_pos=4096)
    head = "AutoModelForCausalLM" if fam in ("llama", "opt") else "AutoModel"
    with torch.device("meta"):
        model = getattr(transformers, head).from_config(cfg, dtype=dtype)
    model = model.to_empty(device=where)
    g = torch.Generator(device=where).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0 if "norm" in name.lower() or "LayerNorm" in name else 0.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
        for name, mod in list(model.named_modules()):  # non-persistent buffers: rebuild / recompute
            if hasattr(mod, "inv_freq") and hasattr(mod, "config"):  # rotary tables: a fresh module
                parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
                setattr(parent, name.rsplit(".", 1)[-1], type(mod)(config=mod.config).to(where))
            if hasattr(mod, "position_ids") and isinstance(getattr(mod, "position_ids"), torch.Tensor):
                mod.position_ids = torch.arange(mod.position_ids.shape[-1], device=where).expand(1, -1)
            if hasattr(mod, "token_type_ids") and isinstance(getattr(mod, "token_type_ids"), torch.Tensor):
                mod.token_type_ids = torch.zeros_like(mod.token_type_ids, device=where)
    return model.eval()


PARAMS = {"shape": str, "calib": int, "seqlen": int, "device": str, "dtype": str, "place": str, "budget": float,
          "batch": int, "layers": int, "correction": str, "allocation": str, "selection": str, "propagate": str,
          "sketch": str, "sketch_dim": lambda v: int(v) if v.isdigit() else v, "head_space": str}
STAT_OPTIONS = ("correction", "allocation", "selection", "propagate", "sketch", "sketch_dim", "head_space")


def parse(argv: list[str]) -> dict:
    """``key=value`` arguments, as on the run.py command line; a bad one is a one-line ``UserError``."""
    import difflib

    from .config import budgets
    from .errors import UserError

    out = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            raise UserError(f"argument '{arg}' is not key=value; e.g. python -m stat_exp.bench shape=llama2_7b calib=256")
        if key not in PARAMS:
            close = difflib.get_close_matches(key, PARAMS, n=1)
            raise UserError(f"unknown argument '{key}'" + (f"; did you mean '{close[0]}'?" if close else "") +
                            f" (arguments: {', '.join(PARAMS)})")
        try:
            out[key] = PARAMS[key](value)
        except ValueError:
            raise UserError(f"{key}={value!r} is not a{'n integer' if PARAMS[key] is int else ' number'}") from None
    if out.get("shape", "bert_base") not in SHAPES:
        raise UserError(f"unknown shape '{out['shape']}'; choose one of: {', '.join(SHAPES)}")
    for key in ("calib", "seqlen", "batch", "layers"):
        if key in out and out[key] < 1:
            raise UserError(f"{key}={out[key]} must be a positive integer")
    if "budget" in out:
        budgets(out["budget"])
    if out.get("dtype") and not isinstance(getattr(torch, out["dtype"], None), torch.dtype):
        raise UserError(f"unknown dtype '{out['dtype']}'; e.g. float32, bfloat16, float16")
    return out


def main(argv: list[str]) -> dict:
    from . import methods
    from .adapters import get_adapter
    from .core.cost import CostModel
    from .engine.capture import capture_inputs
    from .latency import elapsed as _elapsed

    a = parse(argv)
    shape, calib, seqlen = a.get("shape", "bert_base"), a.get("calib", 64), a.get("seqlen", 128)
    device = a.get("device", "cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, a.get("dtype", "bfloat16" if device == "cuda" else "float32"))
    place = a.get("place", "cpu")
    budget, batch = a.get("budget", 0.5), a.get("batch", 8)
    opts = {k: a[k] for k in STAT_OPTIONS if k in a}

    t = time.perf_counter()
    model = build(shape, dtype, device if place == "device" else "cpu", layers=a.get("layers"))
    t_build = time.perf_counter() - t
    ad = get_adapter(model)
    vocab = model.config.vocab_size
    ids = torch.randint(4, vocab, (calib, seqlen), generator=torch.Generator().manual_seed(0))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    res = {"shape": shape, "layers": len(ad.layers(model)), "calib": calib, "seqlen": seqlen,
           "tokens": calib * seqlen, "device": device,
           "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
           "dtype": str(dtype).split(".")[-1], "place": place, "build_s": round(t_build, 2)}
    res["threads"] = torch.get_num_threads()
    res["sketch"], res["sketch_dim"] = a.get("sketch", "gram"), a.get("sketch_dim")
    res["peak_fp32_gflops"] = matmul_peak(device, torch.float32)
    res["peak_bf16_gflops"] = matmul_peak(device, torch.bfloat16)
    peak = res["peak_bf16_gflops"] if dtype == torch.bfloat16 else res["peak_fp32_gflops"]
    fl = stage_flops(model, ad, calib * seqlen, seqlen)
    t = time.perf_counter()
    with torch.no_grad():
        model.to(device)(input_ids=ids[:batch].to(device), **({"use_cache": False} if hasattr(model, "lm_head") else {}))
    res["eval_forward_s"] = _elapsed(t, device)
    model.to("cpu") if place == "cpu" else None
    eval_flops = stage_flops(model, ad, min(batch, calib) * seqlen, seqlen)["eval"]
    res["eval_gflops"] = eval_flops / res["eval_forward_s"] / 1e9
    res["eval_of_peak"] = res["eval_gflops"] / peak
    t = time.perf_counter()
    cap = capture_inputs(model, ad, [{"input_ids": x} for x in ids.split(batch)], device,
                         store_device=device)
    res["capture_s"] = _elapsed(t, device)
    m = methods.build("stat", {"cache": False, **opts})
    m.calibrate(methods.Context(model, ad, CostModel("flops", seqlen), device), cap)
    res.update(m.timings)
    del cap
    t = time.perf_counter()
    m.prune(model, budget)
    res["plan_and_fold_s"] = _elapsed(t, device)
    res["allocation_s"] = m.timings["allocation_s"]
    res["fold_s"] = res["plan_and_fold_s"] - res["allocation_s"]
    del res["plan_and_fold_s"]
    res["stat_total_s"] = sum(res[k] for k in ("capture_s", "statistics_s", "factorization_s", "allocation_s", "fold_s"))
    res["statistics_gflops"] = (fl["forward"] + fl["gram"]) / res["statistics_s"] / 1e9
    res["statistics_of_peak"] = res["statistics_gflops"] / peak
    res["factorization_of_statistics"] = res["factorization_s"] / res["statistics_s"]
    res["fold_of_statistics"] = (res["fold_s"] + res["allocation_s"]) / res["statistics_s"]
    if device.startswith("cuda"):
        res["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    for k, v in res.items():
        print(f"{k:>18}: {v:.2f}" if isinstance(v, float) else f"{k:>18}: {v}")
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}))
    return res


if __name__ == "__main__":
    from .errors import UserError

    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    try:
        main(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
