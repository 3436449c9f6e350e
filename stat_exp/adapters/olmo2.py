"""OLMo-2: the Llama layout, but its q/k RMSNorms span all heads of a layer (``q_norm`` over H·d), so removing a
head would change the normalisation of every kept head: no slicing keeps the attention's function. Only the
FFN neurons are pruned; the attention blocks stay whole (and count as fixed cost in the budget).
"""
from .base import Site
from .llama import LlamaAdapter


class Olmo2Adapter(LlamaAdapter):
    def sites(self, layer):
        m = layer.mlp
        return {"ffn": Site("ffn", [(m, "gate_proj", 1), (m, "up_proj", 1)], (m, "down_proj"), cols_per_unit=1,
                            gated=True)}

    def residual(self, layer, kind):
        return None  # the FFN's output is normed (post_feedforward_layernorm) before the residual add

    def fixed_flops(self, layer, seqlen):
        a = layer.self_attn
        lins = (a.q_proj, a.k_proj, a.v_proj, a.o_proj)
        return sum(2 * m.in_features * m.out_features for m in lins) + 4 * seqlen * a.q_proj.out_features


ADAPTER = Olmo2Adapter(
    family="olmo2",
    model_types=("olmo2",),
    layer_paths=("model.layers", "layers"),
    auto_classes=("AutoModelForCausalLM", "AutoModel"),
)
