"""The calibration engine: captured inputs equal the model's hidden states; statistics skip padding;
walk returns new hidden states without touching its input; hooks are removed even when a layer raises."""
import copy

import pytest
import torch

from stat_exp.adapters import get_adapter
from stat_exp.engine.capture import SiteStats, capture_inputs, hooks, walk


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
    before = [h.clone() for h in cap.hidden]
    walk(model, ad, cap, visit=lambda li, layer, st, run: seen.append(li))
    n = len(ad.layers(model))
    assert seen == list(range(n))
    assert all(torch.equal(a, b) for a, b in zip(before, cap.hidden))  # the input is never modified
    # outputs of the layers before the last equal the model's hidden states (the last may be normed)
    for li in range(n - 1):
        sub = copy.deepcopy(model)
        del ad.layers(sub)[li + 1:]
        _, out = walk(sub, ad, cap)
        torch.testing.assert_close(torch.cat(out.hidden), hs[li + 1], atol=1e-5, rtol=1e-5)


def test_stats_match_explicit_activations(tiny):
    model, _ = tiny
    ad = get_adapter(model)
    x = torch.randint(4, 250, (2, 9))
    mask = torch.ones_like(x)
    mask[1, 6:] = 0  # padding: excluded from the statistics
    cap = capture_inputs(model, ad, [{"input_ids": x, "attention_mask": mask}])
    stats, _ = walk(model, ad, cap, make_stats=lambda k: SiteStats(gram=True))
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
    """A visit that prunes a layer (and forgets its stale outputs) makes the next layer see the pruned outputs;
    a second stream that is not forgotten keeps the outputs of the layer as it was when it ran."""
    from stat_exp.core.plan import SitePlan
    from stat_exp.engine.models import tiny_model
    from stat_exp.engine.surgery import apply_site

    model, _ = tiny_model("llama", layers=3)
    ad = get_adapter(model)
    x = torch.randint(4, 250, (2, 8))
    ref = copy.deepcopy(model)
    for li in range(3):
        apply_site(ad.sites(ad.layers(ref)[li])["ffn"], SitePlan(keep=[0, 1, 2]))
    with torch.no_grad():
        want = ref(input_ids=x, output_hidden_states=True).hidden_states[2]
        dense = model(input_ids=x, output_hidden_states=True).hidden_states[2]

    def prune(li, layer, st, run):
        run.all("dense")
        apply_site(ad.sites(layer)["ffn"], SitePlan(keep=[0, 1, 2]))
        run.forget("pruned")

    cap = capture_inputs(model, ad, [{"input_ids": x}])
    sub = copy.deepcopy(model)
    del ad.layers(sub)[2:]
    _, out = walk(sub, ad, {"dense": cap, "pruned": cap}, visit=prune)
    torch.testing.assert_close(out["pruned"].hidden[0], want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["dense"].hidden[0], dense, atol=1e-5, rtol=1e-5)


def test_hooks_are_removed_when_a_layer_raises():
    from stat_exp.engine.models import tiny_model

    model, _ = tiny_model("llama")
    ad = get_adapter(model)
    cap = capture_inputs(model, ad, [{"input_ids": torch.randint(4, 250, (1, 6))}])

    def boom(li, layer, stats, run):
        with hooks() as hs:
            hs.append(ad.sites(layer)["ffn"].consumer_linear.register_forward_pre_hook(lambda m, a: None))
            raise RuntimeError("layer failed")

    with pytest.raises(RuntimeError, match="layer failed"):
        walk(model, ad, cap, make_stats=lambda k: SiteStats(), visit=boom)
    for m in model.modules():
        assert not m._forward_pre_hooks and not m._forward_hooks
    assert next(ad.layers(model)[0].parameters()).device.type == "cpu"
