"""Simple methods: plans respect the budget, are monotone in it, and budget 1.0 changes nothing."""
import copy

import pytest
import torch

from conftest import outputs
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
    return m, ad


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
    counts = allocation.uniform(n, c, 0.5 * 40)
    assert sum(k * ci for k, ci in zip(counts, c)) <= 20
    keeps = allocation.by_score([torch.tensor([4.0, 3, 2, 1]), torch.arange(10.0), torch.arange(10.0) + 5], c, 20)
    assert sum(len(k) * ci for k, ci in zip(keeps, c)) <= 20
    assert keeps[2][-1] == 9 and 0 not in keeps[1]


def test_unknown_method():
    from stat_exp.errors import UserError

    with pytest.raises(UserError, match="unknown method 'nope'"):
        methods.build("nope")
