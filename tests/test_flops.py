"""The analytic cost model equals torch's FlopCounterMode with eager attention."""
import torch
from torch.utils.flop_counter import FlopCounterMode

from stat_exp.adapters import get_adapter
from stat_exp.core.cost import layer_flops, model_flops, unit_cost
from stat_exp.engine.models import tiny_model


def test_layer_flops_match_counter(tiny):
    model, _ = tiny
    model.set_attn_implementation("eager")
    ad = get_adapter(model)
    T = 24
    x = torch.randint(4, 250, (1, T))
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            model(input_ids=x)
    counted = fc.get_total_flops()
    f = model_flops(ad, model, T)
    assert f["prunable"] * T == sum(layer_flops(ad, layer, T) for layer in ad.layers(model)) * T
    if hasattr(model, "lm_head"):          # decoders: everything is per token
        assert f["total"] * T == counted
    else:                                   # encoders: no head here; pooler is absent in AutoModel? count layers
        layers_only = counted - (f["total"] - f["prunable"]) * (T if not hasattr(model, "pooler") or model.pooler is None else 1)
        assert f["prunable"] * T == layers_only


def test_unit_costs_add_up(tiny):
    model, _ = tiny
    ad = get_adapter(model)
    T = 16
    for layer in ad.layers(model):
        for site in ad.sites(layer).values():
            from stat_exp.core.cost import site_flops

            assert site_flops(site, T) == unit_cost(site, T) * site.n_units


def test_gqa_group_cost():
    m, _ = tiny_model("llama", kv_heads=2, heads=4, hidden=64)
    site = get_adapter(m).sites(get_adapter(m).layers(m)[0])["attn"]
    d, g, s, h = 16, 2, 10, 64
    assert unit_cost(site, s) == 2 * h * d * (2 * g + 2) + 4 * s * g * d
