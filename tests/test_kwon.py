"""Kwon et al. 2022 re-implementation: search, rearrangement, the tuning system, Fisher, end to end."""
import itertools

import pytest
import torch

from conftest import FAMILIES, outputs
from stat_exp.adapters import get_adapter
from stat_exp.engine.capture import capture_inputs
from stat_exp.core.cost import CostModel, model_flops
from stat_exp.methods import Context, build
from stat_exp.methods.kwon import damped_solve, rearrange, search, tuning_system
from stat_exp.engine.models import tiny_model
from stat_exp.errors import UserError


def test_search_matches_brute_force_and_respects_budget():
    g = torch.Generator().manual_seed(0)
    imp = [torch.rand(3, generator=g), torch.rand(5, generator=g), torch.rand(3, generator=g), torch.rand(5, generator=g)]
    kinds, costs = ["attn", "ffn", "attn", "ffn"], [4.0, 1.0, 4.0, 1.0]
    budget = 0.5 * (6 * 4 + 10 * 1)
    keeps = search(imp, kinds, costs, budget)
    kept_cost = sum(len(k) * c for k, c in zip(keeps, costs))
    assert kept_cost <= budget
    # brute force over head counts: top-h heads + most important neurons that fit
    heads = sorted([(float(v), i, u) for i in (0, 2) for u, v in enumerate(imp[i])], reverse=True)
    neur = sorted([(float(v), i, u) for i in (1, 3) for u, v in enumerate(imp[i])], reverse=True)
    best = max(sum(t[0] for t in heads[:h]) + sum(t[0] for t in neur[:int(budget - 4 * h)])
               for h in range(7) if 4 * h <= budget)
    got = sum(float(imp[i][u]) for i, k in enumerate(keeps) for u in k)
    assert got == pytest.approx(best)


def test_rearrangement_never_worse_and_finds_the_optimum_on_small_cases():
    g = torch.Generator().manual_seed(1)
    for trial in range(5):
        B = torch.randn(6, 8, generator=g, dtype=torch.float64)
        F = B.T @ B
        start = sorted(torch.argsort(F.diagonal(), descending=True)[:4].tolist())
        f = lambda keep: (lambda p: float(p @ F @ p))(torch.tensor([0.0 if i in keep else 1.0 for i in range(8)],  # noqa
                                                                     dtype=torch.float64))
        out = rearrange(start, F)
        assert len(out) == 4 and f(out) <= f(start) + 1e-12
        opt = min(f(list(c)) for c in itertools.combinations(range(8), 4))
        assert f(out) <= opt + 0.5 * (f(start) - opt) + 1e-9  # a local search: at least half the gap closed


def test_tuning_system_equals_explicit_least_squares():
    g = torch.Generator().manual_seed(2)
    N, n, d, cpu = 50, 12, 5, 3  # 4 units of 3 columns
    Z, T = torch.randn(N, n, generator=g, dtype=torch.float64), torch.randn(N, d, generator=g, dtype=torch.float64)
    W = torch.randn(d, n, generator=g, dtype=torch.float64)
    keep = [0, 2, 3]
    cols = [[u * cpu + c for c in range(cpu)] for u in keep]
    for ones in (False, True):
        A, r = tuning_system(Z.T @ Z, T.T @ Z, Z.sum(0), T.sum(0), N, W, keep, cpu, ones=ones)
        X = torch.stack([(Z[:, c] @ W[:, c].T).reshape(-1) for c in cols] + [torch.ones(N * d, dtype=torch.float64)] *
                        ones, 1)  # (N·d, k [+1])
        assert torch.allclose(A, X.T @ X) and torch.allclose(r, X.T @ T.reshape(-1))
        x = torch.linalg.solve(A, r)
        assert torch.allclose(x, torch.linalg.lstsq(X, T.reshape(-1, 1)).solution.squeeze(1))
        # damped towards x0 = (1…1, 0): the explicit damped problem [X; I] x = [T; x0] (LSMR's damp = 1)
        x0 = torch.tensor([1.0] * len(keep) + [0.0] * ones, dtype=torch.float64)
        big = torch.cat([X, torch.eye(len(x0), dtype=torch.float64)])
        rhs = torch.cat([T.reshape(-1), x0])
        want = torch.linalg.lstsq(big, rhs[:, None]).solution.squeeze(1)
        assert torch.allclose(damped_solve(A, r, len(keep), 1.0), want, atol=1e-9)


def _ctx(model, tok, labelled=True):
    adapter = get_adapter(model)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randint(4, 200, (4, 16), generator=g) for _ in range(4)]
    kw = {"labels": None}
    bs = [{"input_ids": x} for x in xs]
    if labelled:
        head = type(model).__name__
        lab = [{"input_ids": x, "labels": x} if "CausalLM" in head else
               {"input_ids": x, "labels": torch.randint(0, 2, (4,), generator=g)} for x in xs]
    del kw
    cap = capture_inputs(model, adapter, bs)
    return Context(model, adapter, CostModel("flops", 16), labelled=lab if labelled else None), cap


CLS = [f for f in FAMILIES if f[1] in ("bert", "distilbert")]
LM = [f for f in FAMILIES if f[2] == "causal_lm" and "attn_units" not in f[3]]  # kwon: kv_group units


@pytest.mark.parametrize("fam", [(f[1], "seq_cls", f[3]) for f in CLS] + [(f[1], f[2], f[3]) for f in LM],
                         ids=[f[0] + "_cls" for f in CLS] + [f[0] for f in LM])
def test_kwon_runs_on_every_family_within_budget_and_is_deterministic(fam):
    family, head, kw = fam
    model, tok = tiny_model(family, head, **kw)
    dense = model_flops(get_adapter(model), model, 16)["prunable"]
    plans = []
    for _ in range(2):
        ctx, cap = _ctx(model, tok)
        m = build("kwon")
        m.calibrate(ctx, cap)
        pruned = __import__("copy").deepcopy(model)
        plan = m.prune(pruned, 0.6)
        assert model_flops(get_adapter(pruned), pruned, 16)["prunable"] <= 0.6 * dense + 1e-6
        x = torch.randint(4, 200, (2, 10), generator=torch.Generator().manual_seed(9))
        assert torch.isfinite(outputs(pruned, x)).all()
        plans.append((plan.to_json()["keep"], outputs(pruned, x)))
    assert plans[0][0] == plans[1][0] and torch.equal(plans[0][1], plans[1][1])


def test_kwon_fisher_is_zero_for_dead_units_and_prunes_them_first():
    model, tok = tiny_model("bert", "seq_cls")
    layer = get_adapter(model).layers(model)[0]
    dead = [1, 5, 7]
    with torch.no_grad():
        layer.output.dense.weight[:, dead] = 0  # these neurons cannot change the loss
    ctx, cap = _ctx(model, tok)
    m = build("kwon", tune=False, rearrange=False)
    m.calibrate(ctx, cap)
    ffn0 = ctx.site_keys.index((0, "ffn"))
    imp = m.importance[ffn0]
    assert torch.all(imp[dead] == 0) and (imp > 0).sum() == len(imp) - len(dead)
    # at a budget that removes about 3 neurons' FLOPs, exactly the dead ones go
    budget = 1 - 3 * ctx.costs[ffn0] / ctx.dense_cost
    keep = m.masks(budget + 1e-9)[ffn0]
    assert not set(dead) & set(keep) and len(keep) == len(imp) - 3


def test_kwon_fisher_pass_reports_its_progress(caplog):
    """The Fisher pass over the labelled sample (2048 examples by default) is the long step: it logs a
    closing line that counts every labelled batch."""
    model, tok = tiny_model("bert", "seq_cls")
    ctx, cap = _ctx(model, tok)
    with caplog.at_level("INFO", logger="stat_exp"):
        build("kwon", tune=False).calibrate(ctx, cap)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("kwon fisher:")]
    assert len(lines) == 1 and lines[0].startswith(f"kwon fisher: {len(ctx.labelled)} batches in ")


def test_kwon_low_budget_may_empty_a_site():
    model, tok = tiny_model("bert", "seq_cls")
    ctx, cap = _ctx(model, tok)
    m = build("kwon")
    m.calibrate(ctx, cap)
    pruned = __import__("copy").deepcopy(model)
    plan = m.prune(pruned, 0.1)
    assert any(len(k) == 0 for lp in plan.layers for k in (sp.keep for sp in lp.values()))
    assert torch.isfinite(outputs(pruned, torch.randint(4, 200, (2, 10)))).all()


def test_kwon_without_labels_is_one_line():
    from stat_exp.errors import UserError

    model, tok = tiny_model("bert", "base")
    ctx, cap = _ctx(model, tok, labelled=False)
    with pytest.raises(UserError, match="labelled"):
        build("kwon").calibrate(ctx, cap)


def test_kwon_refuses_query_head_units_in_one_line():
    from conftest import make_tiny

    model, tok = make_tiny("llama", kv_heads=2, attn_units="query_head")
    ctx, cap = _ctx(model, tok)
    with pytest.raises(UserError, match="method kwon searches masks under additive unit costs.*attn_units=kv_group"):
        build("kwon").calibrate(ctx, cap)
