"""STAT invariants (STAT.md §7) and every ablation switch on tiny models of all families."""
import copy

import pytest
import torch

from conftest import outputs
from stat_exp import methods
from stat_exp.core import linalg
from stat_exp.adapters import get_adapter
from stat_exp.engine.capture import capture_inputs
from stat_exp.core.cost import CostModel, model_flops
from stat_exp.engine.models import tiny_model
from stat_exp.engine.surgery import apply_plan


# ------------------------------------------------------------------ linear algebra
def _wellcond(m=400, n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3, n, dtype=torch.float64)


@pytest.mark.parametrize("backend", ["torch", "lapack"])
def test_fast_pivots_equal_scipy_geqp3(backend):
    Z = _wellcond()
    P, R, e2 = linalg.pivoted_cholesky(Z.T @ Z, block=7, backend=backend)
    Ps, Rs = linalg.pivoted_qr_scipy(Z)
    assert torch.equal(P, Ps)
    torch.testing.assert_close(R[:, P].abs(), Rs.abs(), atol=1e-9, rtol=1e-9)
    tail = torch.flip(torch.cumsum(torch.flip((Rs ** 2).sum(1), [0]), 0), [0])  # suffix sums of R's rows
    torch.testing.assert_close(e2[:-1], tail, atol=1e-6, rtol=1e-9)


@pytest.mark.parametrize("kind", ["gram", "tsqr"])
def test_error_curve_is_the_lstsq_residual_for_every_k(kind):
    Z = _wellcond(n=40)
    acc = linalg.make_accumulator(kind)
    for chunk in Z.split(64):
        acc.add(chunk)
    P, R, e2 = linalg.pivoted_cholesky(acc.gram(), backend="torch" if kind == "gram" else "lapack")
    for k in range(41):
        I, E = P[:k], P[k:]
        X = torch.linalg.lstsq(Z[:, I], Z[:, E]).solution if k else torch.zeros(0, 40 - k, dtype=Z.dtype)
        res = ((Z[:, E] - Z[:, I] @ X) ** 2).sum()
        assert float(e2[k]) == pytest.approx(float(res), rel=1e-6, abs=1e-6)
        if 0 < k < 40:
            torch.testing.assert_close(linalg.interpolative(P, R, k), X, atol=1e-5, rtol=1e-4)


def test_rank_r_exact():
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(300, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 30, generator=g, dtype=torch.float64)
    P, R, e2 = linalg.pivoted_cholesky(Z.T @ Z)
    assert float(e2[5]) < 1e-8 * float(e2[0])
    X = linalg.lstsq_from_gram(Z.T @ Z, P[:5], P[5:], ridge=0)
    torch.testing.assert_close(Z[:, P[:5]] @ X, Z[:, P[5:]], atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("kind", ["countsketch", "gaussian"])
def test_sketches_approximate_gram(kind):
    Z = _wellcond(m=4000, n=20)
    acc = linalg.make_accumulator(kind, dim=2000, seed=0)
    for chunk in Z.split(500):
        acc.add(chunk)
    G = Z.T @ Z
    assert float((acc.gram() - G).norm() / G.norm()) < 0.15


# ------------------------------------------------------------------ sites on models
def _calibrated(model, name="stat", seqlen=16, n=8, **opts):
    ad = get_adapter(model)
    g = torch.Generator().manual_seed(3)
    x = torch.randint(4, 250, (n, seqlen), generator=g)
    cap = capture_inputs(model, ad, [{"input_ids": b} for b in x.split(4)])
    m = methods.build(name, cache=False, ridge=0.0, **opts) if name.startswith("stat") else methods.build(name)
    m.calibrate(methods.Context(model, ad, CostModel("flops", seqlen)), cap)
    return m, x


def _plant_duplicate_neurons(model, pairs):
    """Make FFN neuron b an exact copy of neuron a in every layer (producer rows duplicated)."""
    ad = get_adapter(model)
    with torch.no_grad():
        for layer in ad.layers(model):
            site = ad.sites(layer)["ffn"]
            for lin in site.producer_linears():
                for a, b in pairs:
                    lin.weight[b] = lin.weight[a]
                    if lin.bias is not None:
                        lin.bias[b] = lin.bias[a]


@pytest.mark.parametrize("fam,kw", [("llama", {}), ("opt", {}), ("bert", {}), ("distilbert", {})])
def test_planted_redundancy_lossless_with_correction_only(fam, kw):
    model, _ = tiny_model(fam, "causal_lm" if fam in ("llama", "opt") else "base", **kw)
    pairs = [(0, 90), (1, 91), (2, 92), (3, 93)]
    _plant_duplicate_neurons(model, pairs)
    for correction, lossless in (("lstsq", True), ("none", False)):
        m, x = _calibrated(model, correction=correction)
        plan = m.plan(1.0)
        for i, (li, kind) in enumerate(m.ctx.site_keys):  # drop exactly the duplicates
            if kind == "ffn":
                keep = [j for j in range(96) if j not in (90, 91, 92, 93)]
                plan.layers[li]["ffn"] = m.fold(i, keep)
        pruned = apply_plan(copy.deepcopy(model), plan)
        err = (outputs(pruned, x) - outputs(model, x)).abs().max().item()
        if lossless:
            assert err < 1e-4, err
        else:
            assert err > 1e-3, err


def test_qr_selection_finds_planted_duplicates():
    model, _ = tiny_model("llama")
    _plant_duplicate_neurons(model, [(0, 90), (1, 91)])
    m, _ = _calibrated(model)
    for i, (li, kind) in enumerate(m.ctx.site_keys):
        if kind == "ffn":
            e2 = m.factors[i]["err2"]
            assert float(e2[94]) < 1e-6 * float(e2[0])   # two units are free to drop
            assert set(m.factors[i]["perm"][94:].tolist()) & {0, 90} and set(m.factors[i]["perm"][94:].tolist()) & {1, 91}


def test_redundant_kv_group_pruned_losslessly():
    """A KV group whose value/output path is a copy of another's is removed exactly with correction."""
    model, _ = tiny_model("llama", kv_heads=2, heads=4)
    ad = get_adapter(model)
    with torch.no_grad():
        for layer in ad.layers(model):
            a = layer.self_attn  # group 1 := group 0 (q, k, v rows)
            for name in ("q_proj", "k_proj", "v_proj"):
                w = getattr(a, name).weight
                half = w.shape[0] // 2
                w[half:] = w[:half]
    m, x = _calibrated(model, correction="lstsq")
    plan = m.plan(1.0)
    for i, (li, kind) in enumerate(m.ctx.site_keys):
        if kind == "attn":
            plan.layers[li]["attn"] = m.fold(i, [0])
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert (outputs(pruned, x) - outputs(model, x)).abs().max().item() < 1e-4


def test_budget_one_unchanged_and_respected(tiny):
    model, _ = tiny
    m, x = _calibrated(model)
    same = copy.deepcopy(model)
    m.prune(same, 1.0)
    torch.testing.assert_close(outputs(same, x), outputs(model, x), atol=1e-6, rtol=1e-6)
    ad, dense, prev = m.ctx.adapter, model_flops(m.ctx.adapter, model, 16)["prunable"], -1.0
    for b in (0.2, 0.4, 0.6, 0.8):
        p = copy.deepcopy(model)
        m.prune(p, b)
        got = model_flops(ad, p, 16)["prunable"] / dense
        assert got <= b + 1e-9 and got >= prev
        prev = got


SWITCHES = [dict(correction=c) for c in ("lstsq_bias", "lstsq", "none")] + \
    [dict(selection=s) for s in ("random", "magnitude")] + \
    [dict(allocation=a) for a in ("paper", "uniform")] + \
    [dict(propagate="pruned"), dict(propagate="pruned", target="dense"), dict(order="ffn_first"),
     dict(head_space="context"), dict(normalize="residual"), dict(normalize="none")] + \
    [dict(sketch=k, sketch_dim=64) for k in ("tsqr", "countsketch", "gaussian")]


@pytest.mark.parametrize("opts", SWITCHES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_switch_runs(tiny, opts):
    model, _ = tiny
    m, x = _calibrated(model, **opts)
    p = copy.deepcopy(model)
    plan = m.prune(p, 0.6)
    assert torch.isfinite(outputs(p, x)).all()
    dense = model_flops(m.ctx.adapter, model, 16)["prunable"]
    assert model_flops(m.ctx.adapter, p, 16)["prunable"] / dense <= 0.6 + 1e-9
    assert plan.meta["budget"] == 0.6


def test_sequential_equals_dense_pass_on_first_layer():
    """propagate=pruned recomputes statistics on pruned inputs; layer 0 sees identical inputs."""
    model, _ = tiny_model("llama")
    md, x = _calibrated(model, propagate="dense")
    ms, _ = _calibrated(model, propagate="pruned")
    pd_, ps = copy.deepcopy(model), copy.deepcopy(model)
    plan_d, plan_s = md.prune(pd_, 0.5), ms.prune(ps, 0.5)
    assert plan_d.layers[0]["ffn"].keep == plan_s.layers[0]["ffn"].keep
    torch.testing.assert_close(plan_d.layers[0]["ffn"].weight, plan_s.layers[0]["ffn"].weight, atol=1e-4, rtol=1e-4)


def test_stat_statistics_cache(tmp_path):
    model, _ = tiny_model("llama")
    ad = get_adapter(model)
    x = torch.randint(4, 250, (4, 16))
    key = {"model": "tiny", "calib": 4}
    runs = []
    for _ in range(2):
        cap = capture_inputs(model, ad, [{"input_ids": x}])
        m = methods.build("stat")
        m.calibrate(methods.Context(model, ad, CostModel("flops", 16), cache_dir=str(tmp_path), cache_key=key), cap)
        runs.append(m)
    assert len(list(tmp_path.glob("stat-*.pt"))) == 1
    assert runs[0].plan(0.5).sizes() == runs[1].plan(0.5).sizes()


def test_dense_target_at_full_budget_is_identity():
    model, _ = tiny_model("llama", kv_heads=2)
    m, x = _calibrated(model, propagate="pruned", target="dense")
    p = copy.deepcopy(model)
    m.prune(p, 1.0)
    torch.testing.assert_close(outputs(p, x), outputs(model, x), atol=1e-4, rtol=1e-4)


def test_dense_target_needs_sequential():
    from stat_exp.errors import UserError

    with pytest.raises(UserError, match="target=dense needs propagate=pruned"):
        methods.build("stat", target="dense")


def test_ridge_solve_against_numpy():
    """The one regularised solve: (A + λ·mean diag(A)·I) X = B, for a matrix and a vector right-hand side, and
    on a singular A (least-squares fallback when λ = 0)."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    Z = torch.randn(40, 6, generator=g, dtype=torch.float64)
    A, B = Z.T @ Z, torch.randn(6, 3, generator=g, dtype=torch.float64)
    lam = 1e-3 * float(A.diagonal().mean())
    want = np.linalg.solve(A.numpy() + lam * np.eye(6), B.numpy())
    np.testing.assert_allclose(linalg.ridge_solve(A, B, 1e-3).numpy(), want, rtol=1e-10)
    np.testing.assert_allclose(linalg.ridge_solve(A, B[:, 0], 1e-3).numpy(), want[:, 0], rtol=1e-10)
    S = torch.zeros(3, 3, dtype=torch.float64)
    S[0, 0] = 2.0
    x = linalg.ridge_solve(S, torch.tensor([4.0, 0.0, 0.0], dtype=torch.float64), 0.0)
    assert torch.allclose(x, torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64))
