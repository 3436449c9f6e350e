"""The calibration engine: captured inputs equal the model's hidden states; statistics skip padding."""
import copy
import dataclasses

import torch

from stat_exp.adapters import get_adapter
from stat_exp.capture import SiteStats, capture_inputs, walk


def test_layer_inputs_equal_hidden_states(tiny):
    model, _ = tiny
    ad = get_adapter(model)
    x = torch.randint(4, 250, (3, 10))
    batches = [{"input_ids": x[:2]}, {"input_ids": x[2:]}]
    cap = capture_inputs(model, ad, batches)
    with torch.no_grad():
        hs = model(input_ids=x, output_hidden_states=True).hidden_states
    torch.testing.assert_close(torch.cat(cap.hidden), hs[0], atol=1e-6, rtol=1e-6)
    seen = []
    walk(model, ad, cap, on_layer=lambda li, layer, st: seen.append(li) or False)
    n = len(ad.layers(model))
    assert seen == list(range(n))
    # outputs of the layers before the last equal the model's hidden states (the last may be normed)
    cap2 = capture_inputs(model, ad, batches)
    for li in range(n - 1):
        one = dataclasses.replace(cap2, hidden=list(cap2.hidden))
        sub = copy.deepcopy(model)
        del ad.layers(sub)[li + 1:]
        walk(sub, ad, one)
        torch.testing.assert_close(torch.cat(one.hidden), hs[li + 1], atol=1e-5, rtol=1e-5)


def test_stats_match_explicit_activations(tiny):
    model, _ = tiny
    ad = get_adapter(model)
    x = torch.randint(4, 250, (2, 9))
    mask = torch.ones_like(x)
    mask[1, 6:] = 0  # padding: excluded from the statistics
    cap = capture_inputs(model, ad, [{"input_ids": x, "attention_mask": mask}])
    stats = walk(model, ad, cap, make_stats=lambda k: SiteStats(gram=True))
    z_seen = []
    site = ad.sites(ad.layers(model)[0])["ffn"]
    h = site.consumer_linear.register_forward_pre_hook(lambda m, a: z_seen.append(a[0]))
    with torch.no_grad():
        model(input_ids=x, attention_mask=mask)
    h.remove()
    z = z_seen[0].reshape(-1, z_seen[0].shape[-1])[mask.bool().reshape(-1)].double()  # (N, n)
    st = stats[0]["ffn"]
    assert st.n == int(mask.sum())
    torch.testing.assert_close(st.G, z.T @ z, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(st.s1, z.sum(0), atol=1e-4, rtol=1e-4)


def test_pruned_outputs_feed_next_layer():
    """A callback that prunes a layer makes the next layer see the pruned outputs."""
    from stat_exp.models import tiny_model
    from stat_exp.plan import SitePlan
    from stat_exp.surgery import apply_site

    model, _ = tiny_model("llama", layers=3)
    ad = get_adapter(model)
    x = torch.randint(4, 250, (2, 8))
    ref = copy.deepcopy(model)
    for li in range(3):
        apply_site(ad.sites(ad.layers(ref)[li])["ffn"], SitePlan(keep=[0, 1, 2]))
    with torch.no_grad():
        want = ref(input_ids=x, output_hidden_states=True).hidden_states[2]

    def prune(li, layer, st):
        apply_site(ad.sites(layer)["ffn"], SitePlan(keep=[0, 1, 2]))
        return True

    cap = capture_inputs(model, ad, [{"input_ids": x}])
    sub = copy.deepcopy(model)
    del ad.layers(sub)[2:]
    walk(sub, ad, cap, on_layer=prune)
    torch.testing.assert_close(cap.hidden[0], want, atol=1e-5, rtol=1e-5)
