"""OPT family: MHA with biases, ReLU MLP (fc1 → fc2) on the decoder layer itself.

OPT's attention views with ``num_heads``, so it must be updated after slicing; with zero heads
left the view is ambiguous, so the block becomes ``_NoHeadsAttention`` (output = out_proj bias).
"""
from transformers.models.opt.modeling_opt import OPTAttention

from .base import Adapter, Site


class _NoHeadsAttention(OPTAttention):
    """An OPT attention block whose heads were all pruned: it contributes its output bias only."""

    def forward(self, hidden_states, *args, **kwargs):
        return self.out_proj(hidden_states.new_zeros(*hidden_states.shape[:-1], 0)), None


class OPTAdapter(Adapter):
    def sites(self, layer):
        a, d = layer.self_attn, layer.self_attn.head_dim
        return {
            "attn": Site("attn", [(a, "q_proj", d), (a, "k_proj", d), (a, "v_proj", d)],
                         (a, "out_proj"), cols_per_unit=d, score_rows_per_unit=d),
            "ffn": Site("ffn", [(layer, "fc1", 1)], (layer, "fc2"), cols_per_unit=1),
        }

    def after_resize(self, layer):
        a = layer.self_attn
        a.num_heads = a.out_proj.in_features // a.head_dim
        if a.num_heads == 0:
            a.__class__ = _NoHeadsAttention


ADAPTER = OPTAdapter(
    family="opt",
    model_types=("opt",),
    layer_paths=("model.decoder.layers", "decoder.layers"),
    auto_classes={"AutoModelForCausalLM": "ForCausalLM", "AutoModel": "Model",
                  "AutoModelForSequenceClassification": "ForSequenceClassification",
                  "AutoModelForQuestionAnswering": "ForQuestionAnswering"},
)
