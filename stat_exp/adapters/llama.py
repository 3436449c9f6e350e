"""Llama family and the decoders with its layout (Qwen2/3, Mistral, Gemma 1/2/3): MHA or grouped-query
attention (``q/k/v/o_proj``; q/k norms over head_dim, extra norms and soft-capping need no slicing), gated MLP.

Attention unit = one KV group: KV head j with query heads j·g … j·g+g−1 (g = num_key_value_groups),
so HF's uniform group size stays valid after pruning. Head h occupies rows h·d:(h+1)·d.
With ``split_groups`` (``attn_units=query_head``) the unit is one query head: K/V become ``GatheredLinear``s
that hand each query head its group's KV head, and the block runs with group size 1.
"""
from ..engine.remote import GatheredLinear
from .base import Adapter, Site


def _gathered(lin, kv: list[int], head_dim: int) -> GatheredLinear:
    new = GatheredLinear(lin.in_features, kv, head_dim, lin.bias is not None, device="meta")
    new.weight, new.bias = lin.weight, lin.bias  # the same tensors: a shared copy stays shared
    return new


class LlamaAdapter(Adapter):
    def sites(self, layer):
        a, m = layer.self_attn, layer.mlp
        d, g = a.head_dim, a.num_key_value_groups
        ffn = Site("ffn", [(m, "gate_proj", 1), (m, "up_proj", 1)], (m, "down_proj"), cols_per_unit=1, gated=True)
        if isinstance(a.k_proj, GatheredLinear):
            attn = Site("attn", [(a, "q_proj", d)], (a, "o_proj"), cols_per_unit=d, score_rows_per_unit=d,
                        shared=[(a, "k_proj"), (a, "v_proj")])
        else:
            attn = Site("attn", [(a, "q_proj", g * d), (a, "k_proj", d), (a, "v_proj", d)],
                        (a, "o_proj"), cols_per_unit=g * d, score_rows_per_unit=g * d)
        return {"attn": attn, "ffn": ffn}

    def residual(self, layer, kind):
        if hasattr(layer, "pre_feedforward_layernorm"):  # Gemma-2/3: sub-layer outputs are normed before the add
            return None
        return (layer.input_layernorm if kind == "attn" else layer.post_attention_layernorm), "input"

    def split_groups(self, layer):
        a = layer.self_attn
        g = a.num_key_value_groups
        if g == 1 or isinstance(a.k_proj, GatheredLinear):
            return
        kv = [h // g for h in range(a.q_proj.out_features // a.head_dim)]
        a.k_proj, a.v_proj = _gathered(a.k_proj, kv, a.head_dim), _gathered(a.v_proj, kv, a.head_dim)
        a.num_key_value_groups = 1

    def resized_attrs(self, layer):
        out = {"mlp": {"intermediate_size": layer.mlp.down_proj.in_features}}
        if isinstance(layer.self_attn.k_proj, GatheredLinear):
            out["self_attn"] = {"num_key_value_groups": 1}
        return out


ADAPTER = LlamaAdapter(
    family="llama",
    model_types=("llama", "qwen2", "mistral", "qwen3", "gemma", "gemma2", "gemma3_text"),
    layer_paths=("model.layers", "layers"),
    auto_classes=("AutoModelForCausalLM", "AutoModel", "AutoModelForSequenceClassification",
                  "AutoModelForQuestionAnswering"),
)
