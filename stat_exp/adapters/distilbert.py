"""DistilBERT family: attention.{q_lin,k_lin,v_lin} → out_lin; ffn.lin1 → ffn.lin2."""
from .base import Adapter, Site


class DistilBertAdapter(Adapter):
    def sites(self, layer):
        a = layer.attention
        d = a.attention_head_size
        return {
            "attn": Site("attn", [(a, "q_lin", d), (a, "k_lin", d), (a, "v_lin", d)], (a, "out_lin"),
                         cols_per_unit=d, score_rows_per_unit=d),
            "ffn": Site("ffn", [(layer.ffn, "lin1", 1)], (layer.ffn, "lin2"), cols_per_unit=1),
        }

    def residual(self, layer, kind):
        return (layer.sa_layer_norm if kind == "attn" else layer.output_layer_norm), "post"

    def resized_attrs(self, layer):
        a = layer.attention
        return {"attention": {"n_heads": a.q_lin.out_features // a.attention_head_size}}


ADAPTER = DistilBertAdapter(
    family="distilbert",
    model_types=("distilbert",),
    layer_paths=("distilbert.transformer.layer", "transformer.layer"),
    auto_classes=("AutoModel", "AutoModelForSequenceClassification", "AutoModelForQuestionAnswering"),
    paper_variant="bert",
)
