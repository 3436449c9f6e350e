"""Llama family and the decoders with its layout (Qwen2/3, Mistral, Gemma 1/2/3): MHA or grouped-query
attention (``q/k/v/o_proj``; q/k norms over head_dim, extra norms and soft-capping need no slicing), gated MLP.

Attention unit = one KV group: KV head j with query heads j·g … j·g+g−1 (g = num_key_value_groups),
so HF's uniform group size stays valid after pruning. Head h occupies rows h·d:(h+1)·d.
"""
from .base import Adapter, Site


class LlamaAdapter(Adapter):
    def sites(self, layer):
        a, m = layer.self_attn, layer.mlp
        d, g = a.head_dim, a.num_key_value_groups
        return {
            "attn": Site("attn", [(a, "q_proj", g * d), (a, "k_proj", d), (a, "v_proj", d)],
                         (a, "o_proj"), cols_per_unit=g * d, score_rows_per_unit=g * d),
            "ffn": Site("ffn", [(m, "gate_proj", 1), (m, "up_proj", 1)], (m, "down_proj"),
                        cols_per_unit=1, gated=True),
        }

    def resized_attrs(self, layer):
        return {"mlp": {"intermediate_size": layer.mlp.down_proj.in_features}}


ADAPTER = LlamaAdapter(
    family="llama",
    model_types=("llama", "qwen2", "mistral", "qwen3", "gemma", "gemma2", "gemma3_text"),
    layer_paths=("model.layers", "layers"),
    auto_classes=("AutoModelForCausalLM", "AutoModel", "AutoModelForSequenceClassification",
                  "AutoModelForQuestionAnswering"),
)
