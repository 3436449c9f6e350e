"""Simple methods: plans respect the budget, are monotone in it, and budget 1.0 changes nothing."""
import copy

import pytest
import torch

from conftest import one_unit, outputs
from stat_exp import methods
from stat_exp.errors import UserError
from stat_exp.core import allocation
from stat_exp.adapters import get_adapter
from stat_exp.engine.capture import capture_inputs
from stat_exp.core.cost import CostModel, model_flops

NAMES = ["random", "magnitude", "wanda_sp", "flap"]


def _calibrated(model, name, seqlen=16):
    ad = get_adapter(model)
    torch.manual_seed(1)
    x = torch.randint(4, 250, (4, seqlen))
    cap = capture_inputs(model, ad, [{"input_ids": x[:2]}, {"input_ids": x[2:]}])
    m = methods.build(name)
    m.calibrate(methods.Context(model, ad, CostModel("flops", seqlen)), cap)
    m.cap_for_test = cap
    return m, ad


def _slack(m) -> float:
    """How far below its budget a plan may land: one unit (with its shared K/V); for the one-ratio methods
    (Wanda-sp, magnitude-sp) one step of the ratio, which moves each site by at most one unit."""
    ctx = m.ctx
    if m.name in ("wanda_sp", "magnitude"):
        return sum(c + gc for c, gc in zip(ctx.costs, ctx.group_costs)) / ctx.dense_cost
    return one_unit(ctx)


@pytest.mark.parametrize("name", NAMES)
def test_budget_respected_and_monotone(tiny, name):
    model, _ = tiny
    m, ad = _calibrated(model, name)
    dense = model_flops(ad, model, 16)["prunable"]
    prev = -1
    for b in (0.3, 0.5, 0.7, 0.9):
        pruned = copy.deepcopy(model)
        if b < m.ctx.fixed_cost / m.ctx.dense_cost:  # below what the family cannot prune (OLMo-2's attention)
            with pytest.raises(UserError, match="at least"):
                m.prune(pruned, b)
            continue
        m.prune(pruned, b)
        got = model_flops(ad, pruned, 16)["prunable"] / dense
        assert got <= b + 1e-9
        assert got >= b - _slack(m) - 1e-9  # not far below either: a plan that keeps nothing fails here
        assert got >= prev
        prev = got
        assert torch.isfinite(outputs(pruned, torch.randint(4, 250, (1, 8)))).all()


@pytest.mark.parametrize("name", NAMES)
def test_budget_one_is_identity(tiny, name):
    model, _ = tiny
    m, _ = _calibrated(model, name)
    pruned = copy.deepcopy(model)
    m.prune(pruned, 1.0)
    x = torch.randint(4, 250, (2, 8))
    torch.testing.assert_close(outputs(pruned, x), outputs(model, x), atol=1e-6, rtol=1e-6)


def test_flap_bias_compensation_is_mean_of_dropped():
    """Dropping a constant neuron with FLAP's bias compensation changes nothing."""
    from stat_exp.engine.models import tiny_model

    model, _ = tiny_model("opt", layers=1)
    with torch.no_grad():  # neuron 0: constant ReLU output 3 (zero weights, bias 3)
        model.model.decoder.layers[0].fc1.weight[0].zero_()
        model.model.decoder.layers[0].fc1.bias[0] = 3.0
    m, ad = _calibrated(model, "flap")
    plan = m.plan(1.0)
    plan.layers[0]["ffn"].keep = list(range(1, 96))
    m.decorate(plan)
    from stat_exp.engine.surgery import apply_plan

    pruned = apply_plan(copy.deepcopy(model), plan)
    x = torch.randint(4, 250, (2, 8))
    torch.testing.assert_close(outputs(pruned, x), outputs(model, x), atol=1e-5, rtol=1e-5)


def test_allocation_uniform_and_by_score():
    n, c = [4, 10, 10], [5.0, 1.0, 1.0]
    counts = allocation.uniform([allocation.prefix_costs(range(k), ci) for k, ci in zip(n, c)], 0.5 * 40)
    assert sum(k * ci for k, ci in zip(counts, c)) <= 20
    keeps = allocation.by_score([torch.tensor([4.0, 3, 2, 1]), torch.arange(10.0), torch.arange(10.0) + 5], c, 20)
    assert sum(len(k) * ci for k, ci in zip(keeps, c)) <= 20
    assert keeps[2][-1] == 9 and 0 not in keeps[1]


def test_unknown_method():
    from stat_exp.errors import UserError

    with pytest.raises(UserError, match="unknown method 'nope'"):
        methods.build("nope")


def _group_cost(keep, cost, groups, group_cost):
    """Reference: cost of a kept set = its units plus one group cost per distinct group among them."""
    return len(keep) * cost + (len({groups[u] for u in keep}) * group_cost if groups else 0)


def test_prefix_costs_charge_a_group_once_at_its_first_unit():
    c = allocation.prefix_costs([3, 0, 1, 2], 1.0, groups=[0, 0, 1, 1], group_cost=10.0)
    assert c.tolist() == [0, 11, 22, 23, 24]
    assert allocation.prefix_costs([1, 0], 2.0).tolist() == [0, 2, 4]


@pytest.mark.parametrize("seed", range(20))
def test_by_score_with_groups_equals_dropping_one_by_one(seed):
    """The vectorised group-aware threshold equals the plain loop: drop in ascending score order and recount
    the kept cost (groups charged while any unit of theirs is kept) until it fits."""
    g = torch.Generator().manual_seed(seed)
    n = [6, 8, 5]
    scores = [torch.randint(0, 4, (k,), generator=g).double() for k in n]  # ties on purpose
    costs, gcosts = [1.0, 2.0, 0.5], [3.0, 0.0, 4.0]
    groups = [[u // 2 for u in range(6)], None, [0, 1, 0, 1, 2]]
    total = sum(_group_cost(range(k), c, gr, gc) for k, c, gr, gc in zip(n, costs, groups, gcosts))
    budget = float(torch.rand((), generator=g)) * total
    keeps = allocation.by_score(scores, costs, budget, groups, gcosts)
    flat = sorted(((float(s[u]), i, u) for i, s in enumerate(scores) for u in range(len(s))))
    kept = [set(range(k)) for k in n]

    def cost(kept):
        return sum(_group_cost(k, c, gr, gc) for k, c, gr, gc in zip(kept, costs, groups, gcosts))

    for _, i, u in flat:
        if cost(kept) <= budget:
            break
        kept[i].discard(u)
    assert [sorted(k) for k in kept] == keeps
    assert cost(kept) <= budget


@pytest.mark.parametrize("seed", range(10))
def test_uniform_with_groups_fits_the_budget_along_each_order(seed):
    g = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(6, generator=g), torch.randperm(9, generator=g)]
    groups = [[u // 3 for u in range(6)], [u // 3 for u in range(9)]]
    curves = [allocation.prefix_costs(o, 1.0, gr, 5.0) for o, gr in zip(orders, groups)]
    budget = float(torch.rand((), generator=g)) * float(curves[0][-1] + curves[1][-1])
    counts = allocation.uniform(curves, budget)
    kept = [set(o[:k].tolist()) for o, k in zip(orders, counts)]
    assert sum(_group_cost(k, 1.0, gr, 5.0) for k, gr in zip(kept, groups)) <= budget + 1e-9
    (k0, n0), (k1, n1) = zip(counts, (6, 9))  # one kept fraction: the sites differ by their rounding only
    assert abs(k0 / n0 - k1 / n1) <= 1 / n0 + 1 / n1 + 1e-12


def test_baselines_share_one_statistics_walk(monkeypatch):
    """FLAP and Wanda-sp on the same model and captured inputs walk the model once; other inputs walk again."""
    from stat_exp.engine.models import tiny_model
    from stat_exp.methods import base

    model, _ = tiny_model("llama", kv_heads=2)
    calls = []
    monkeypatch.setattr(base, "walk", lambda *a, **k: calls.append(1) or _real_walk(*a, **k))
    flap, ad = _calibrated(model, "flap")
    wanda = methods.build("wanda_sp")
    wanda.calibrate(methods.Context(model, ad, CostModel("flops", 16)), flap.cap_for_test)
    assert len(calls) == 1 and wanda.stats is flap.stats
    again, _ = _calibrated(model, "wanda_sp")  # new captured inputs: a new walk
    assert len(calls) == 2 and again.stats is not flap.stats


from stat_exp.engine.capture import walk as _real_walk  # noqa: E402


def test_a_different_seed_changes_the_random_plan_the_same_seed_repeats_it():
    from conftest import make_tiny

    model, _ = make_tiny("llama", layers=2)
    ad = get_adapter(model)
    cap = capture_inputs(model, ad, [{"input_ids": torch.randint(4, 250, (2, 16))}])

    def keeps(seed):
        m = methods.build("random")
        m.calibrate(methods.Context(model, ad, CostModel("flops", 16), seed=seed), cap)
        return [sp.keep for lp in m.plan(0.6).layers for sp in lp.values()]

    assert keeps(0) == keeps(0) and keeps(0) != keeps(1)
