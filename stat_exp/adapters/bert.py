"""BERT family (post-LN encoder): self.{query,key,value} → output.dense; intermediate → output."""
from .base import Adapter, Site


class BertAdapter(Adapter):
    def sites(self, layer):
        s, d = layer.attention.self, layer.attention.self.attention_head_size
        return {
            "attn": Site("attn", [(s, "query", d), (s, "key", d), (s, "value", d)],
                         (layer.attention.output, "dense"), cols_per_unit=d, score_rows_per_unit=d),
            "ffn": Site("ffn", [(layer.intermediate, "dense", 1)], (layer.output, "dense"),
                        cols_per_unit=1),
        }

    def residual(self, layer, kind):
        return (layer.attention.output.LayerNorm if kind == "attn" else layer.output.LayerNorm), "post"

    def resized_attrs(self, layer):
        s = layer.attention.self
        return {"attention.self": {"all_head_size": s.query.out_features,
                                   "num_attention_heads": s.query.out_features // s.attention_head_size}}


ADAPTER = BertAdapter(
    family="bert",
    model_types=("bert",),
    layer_paths=("bert.encoder.layer", "encoder.layer"),
    auto_classes=("AutoModel", "AutoModelForSequenceClassification", "AutoModelForQuestionAnswering"),
    paper_variant="bert",
)
