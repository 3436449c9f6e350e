"""The analytic cost model equals torch's FlopCounterMode with eager attention."""
import torch
from torch.utils.flop_counter import FlopCounterMode

from stat_exp.adapters import get_adapter
from stat_exp.core.cost import layer_flops, model_flops, unit_cost
from stat_exp.engine.models import tiny_model


def test_layer_flops_match_counter(tiny):
    """Per layer, and for the whole model, the analytic count equals torch's FlopCounterMode (eager attention)."""
    model, _ = tiny
    model.set_attn_implementation("eager")
    ad = get_adapter(model)
    T = 24
    x = torch.randint(4, 250, (1, T))
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            model(input_ids=x)
    counts = {k: sum(v.values()) for k, v in fc.get_flop_counts().items()}
    layer_names = sorted((k for k in counts if k.rsplit(".", 1)[-1].isdigit()), key=lambda k: int(k.rsplit(".", 1)[1]))
    layers = ad.layers(model)
    assert len(layer_names) == len(layers)
    for name, layer in zip(layer_names, layers):
        assert layer_flops(ad, layer, T) * T == counts[name], name
    f = model_flops(ad, model, T)
    assert f["prunable"] * T == sum(counts[n] for n in layer_names)
    if hasattr(model, "lm_head"):  # decoders: the LM head is the only Linear outside the layers, per token
        assert f["total"] * T == fc.get_total_flops()


def test_unit_costs_add_up(tiny):
    model, _ = tiny
    ad = get_adapter(model)
    T = 16
    for layer in ad.layers(model):
        for site in ad.sites(layer).values():
            from stat_exp.core.cost import group_cost, site_flops

            n_groups = len(set(site.groups)) if site.groups is not None else 0
            assert site_flops(site, T) == unit_cost(site, T) * site.n_units + group_cost(site) * n_groups


def test_gqa_group_cost():
    m, _ = tiny_model("llama", kv_heads=2, heads=4, hidden=64)
    site = get_adapter(m).sites(get_adapter(m).layers(m)[0])["attn"]
    d, g, s, h = 16, 2, 10, 64
    assert unit_cost(site, s) == 2 * h * d * (2 * g + 2) + 4 * s * g * d
