"""OPT family: MHA with biases, ReLU MLP (fc1 → fc2) on the decoder layer itself.

OPT's attention views with ``num_heads``, so it must be updated after slicing; with zero heads
left the view is ambiguous, so the block is silenced (``engine.remote.silence``: output = out_proj bias).
"""
from ..engine.remote import silence
from .base import Adapter, Site


class OPTAdapter(Adapter):
    def sites(self, layer):
        a, d = layer.self_attn, layer.self_attn.head_dim
        return {
            "attn": Site("attn", [(a, "q_proj", d), (a, "k_proj", d), (a, "v_proj", d)],
                         (a, "out_proj"), cols_per_unit=d, score_rows_per_unit=d),
            "ffn": Site("ffn", [(layer, "fc1", 1)], (layer, "fc2"), cols_per_unit=1),
        }

    def residual(self, layer, kind):
        norm = layer.self_attn_layer_norm if kind == "attn" else layer.final_layer_norm
        return norm, ("input" if layer.do_layer_norm_before else "post")

    def resized_attrs(self, layer):
        a = layer.self_attn
        return {"self_attn": {"num_heads": a.out_proj.in_features // a.head_dim}}

    def after_resize(self, layer):
        super().after_resize(layer)
        if layer.self_attn.num_heads == 0:
            silence(layer.self_attn, "out_proj")


ADAPTER = OPTAdapter(
    family="opt",
    model_types=("opt",),
    layer_paths=("model.decoder.layers", "decoder.layers"),
    auto_classes=("AutoModelForCausalLM", "AutoModel", "AutoModelForSequenceClassification",
                  "AutoModelForQuestionAnswering"),
)
