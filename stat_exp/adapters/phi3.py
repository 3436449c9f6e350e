"""Phi-3: fused projections. ``qkv_proj``'s output is [queries H·d | keys KV·d | values KV·d] and
``gate_up_proj``'s is [gate F | up F]; a unit (KV group, neuron) owns rows in every block, so a producer's
rows per unit are a tuple (``units.producer_rows``). The attention reads the query head count from the
config, so each pruned attention block gets its own config copy (``config.num_attention_heads``).
"""
from ..errors import UserError
from .base import Adapter, Site


class Phi3Adapter(Adapter):
    def sites(self, layer):
        a, m = layer.self_attn, layer.mlp
        d, g = a.head_dim, a.num_key_value_groups
        return {
            "attn": Site("attn", [(a, "qkv_proj", (g * d, d, d))], (a, "o_proj"), cols_per_unit=g * d,
                         score_rows_per_unit=g * d),
            "ffn": Site("ffn", [(m, "gate_up_proj", (1, 1))], (m, "down_proj"), cols_per_unit=1, gated=True),
        }

    def residual(self, layer, kind):
        return (layer.input_layernorm if kind == "attn" else layer.post_attention_layernorm), "input"

    def split_groups(self, layer):
        if layer.self_attn.num_key_value_groups > 1:
            raise UserError("attn_units=query_head: Phi-3's fused qkv_proj under grouped-query attention has no "
                            "per-query-head layout yet; use attn_units=kv_group")

    def resized_attrs(self, layer):
        a = layer.self_attn
        kv = a.o_proj.in_features // (a.head_dim * a.num_key_value_groups)
        return {"self_attn": {"num_key_value_heads": kv, "config.num_attention_heads": kv * a.num_key_value_groups}}


ADAPTER = Phi3Adapter(
    family="phi3",
    model_types=("phi3",),
    layer_paths=("model.layers", "layers"),
    auto_classes=("AutoModelForCausalLM", "AutoModel", "AutoModelForSequenceClassification"),
)
