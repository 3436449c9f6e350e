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


# ---------------------------------------------------------------- placement: storage vs compute dtype, streaming
def _ptrs(module):
    return {n: p.data_ptr() for n, p in module.named_parameters()}


def test_borrowed_gives_back_its_own_tensors():
    """Inside the block a bf16 layer computes in fp32; afterwards it has its very own tensors again (nothing
    written, so a memory-mapped model stays mapped), and a Linear made inside the block is stored in bf16.
    With nothing to convert, nothing is copied."""
    from torch import nn

    from stat_exp.engine.models import tiny_model
    from stat_exp.engine.placement import borrowed

    model = tiny_model("llama")[0].to(torch.bfloat16)
    layer = model.model.layers[0]
    before = _ptrs(layer)
    rot = model.model.rotary_emb.inv_freq
    with borrowed(layer, "cpu", torch.float32):
        assert {p.dtype for p in layer.parameters()} == {torch.float32}
        layer.mlp.down_proj = nn.Linear(96, 64, bias=False)  # surgery inside the block
    assert {p.dtype for p in layer.parameters()} == {torch.bfloat16}
    after = _ptrs(layer)
    assert all(after[n] == before[n] for n in before if "down_proj" not in n)
    same = _ptrs(model)
    with borrowed(model, "cpu", torch.bfloat16):  # same device and dtype: the very same tensors
        assert _ptrs(model) == same and model.model.rotary_emb.inv_freq is rot
    with borrowed(model, "cpu", torch.float32):  # buffers keep their dtype (rotary tables)
        assert model.model.rotary_emb.inv_freq is rot
    assert model.model.rotary_emb.inv_freq is rot


@pytest.mark.parametrize("family", ["llama", "gemma3", "opt"])
def test_streamed_evaluation_equals_whole_model(family):
    """A bf16 model streamed a layer at a time in fp32 gives exactly the logits of its fp32 copy run whole
    (the loss the evaluation reports); an fp32 model streamed equals itself whole."""
    from stat_exp.adapters import get_adapter
    from stat_exp.engine.models import tiny_model
    from stat_exp.engine.placement import on_device, streamed

    kw = {"kv_heads": 2} if family == "gemma3" else {}
    base = tiny_model(family, layers=3, **kw)[0]
    x = torch.randint(4, 250, (2, 12))
    with torch.no_grad():
        for storage in (torch.bfloat16, torch.float32):
            model = copy.deepcopy(base).to(storage)
            whole = copy.deepcopy(model).float()(input_ids=x, labels=x)
            ptrs = _ptrs(model)
            with on_device(model, get_adapter(model).layers(model), "cpu") as m:
                got = m(input_ids=x, labels=x)
            with streamed(model, get_adapter(model).layers(model), "cpu", torch.float32) as m:
                again = m(input_ids=x, labels=x)
            assert torch.equal(got.logits, whole.logits) and torch.equal(again.logits, whole.logits)
            assert got.loss.item() == whole.loss.item()
            assert _ptrs(model) == ptrs and {p.dtype for p in model.parameters()} == {storage}


def test_bf16_walk_gives_the_fp32_statistics():
    """Statistics of a bf16-stored model (computed in fp32 a layer at a time) equal those of its fp32 copy."""
    from stat_exp.engine.models import tiny_model

    model = tiny_model("llama")[0].to(torch.bfloat16)
    wide = copy.deepcopy(model).float()
    ad = get_adapter(model)
    x = torch.randint(4, 250, (2, 9))
    got, out = walk(model, ad, capture_inputs(model, ad, [{"input_ids": x}]), make_stats=lambda k: SiteStats(gram=True))
    want, ref = walk(wide, ad, capture_inputs(wide, ad, [{"input_ids": x}]), make_stats=lambda k: SiteStats(gram=True))
    assert torch.equal(out.hidden[0], ref.hidden[0]) and out.hidden[0].dtype == torch.float32
    for a, b in zip(got, want):
        assert all(torch.equal(a[k].G, b[k].G) for k in a)


def test_random_model_is_drawn_once_and_memory_mapped(tmp_path):
    """random://: the weights are drawn into a file on first use and memory-mapped from it (the file is in
    the process's maps), every load gives the same model, and the rotary tables are computed."""
    from omegaconf import OmegaConf

    from stat_exp.engine.models import load, tiny_model

    cfg = OmegaConf.create({"id": "random://llama", "dtype": "bfloat16", "assemble_dir": str(tmp_path),
                            "tiny": {"layers": 2, "hidden": 64, "heads": 4, "ffn": 96, "seed": 1}})
    a, tok = load(cfg)
    files = list(tmp_path.glob("random-llama-*.pt"))
    assert len(files) == 1 and tok.vocab_size >= 256
    assert str(files[0]) in open("/proc/self/maps").read()
    b, _ = load(cfg)
    assert {p.dtype for p in b.parameters()} == {torch.bfloat16} and not any(t.is_meta for t in b.state_dict().values())
    ref = tiny_model("llama")[0]
    torch.testing.assert_close(b.model.rotary_emb.inv_freq, ref.model.rotary_emb.inv_freq)
    w = b.model.layers[0].mlp.up_proj.weight.float()
    assert abs(w.std().item() - 0.02) < 0.003 and torch.equal(b.model.norm.weight.float(), torch.ones(64))
    x = torch.randint(4, 250, (1, 8))
    with torch.no_grad():
        assert torch.equal(a(input_ids=x).logits, b(input_ids=x).logits)
    cfg.tiny.seed = 2
    c, _ = load(cfg)
    assert len(list(tmp_path.glob("random-llama-*.pt"))) == 2
    assert not torch.equal(c.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight)
