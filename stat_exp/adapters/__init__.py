"""Adapter registry: ``get_adapter(model)`` picks the family from ``config.model_type``."""
from ..errors import UserError
from . import bert, distilbert, llama, olmo2, opt, phi3
from .base import Adapter, Site

ADAPTERS: dict[str, Adapter] = {a.family: a for a in (llama.ADAPTER, phi3.ADAPTER, olmo2.ADAPTER, opt.ADAPTER, bert.ADAPTER,
                                                       distilbert.ADAPTER)}
_BY_TYPE = {t: a for a in ADAPTERS.values() for t in a.model_types}
_BY_TYPE.update({f"stat_{t}": a for t, a in list(_BY_TYPE.items())})


def adapter_for(config) -> Adapter:
    """The adapter of a transformers config's ``model_type`` (checked before any weight is loaded)."""
    mt = getattr(config, "model_type", None)
    if mt not in _BY_TYPE:
        raise UserError(f"no adapter for model_type '{mt}'; supported: {', '.join(sorted(_BY_TYPE))} "
                        f"(add a file under stat_exp/adapters/ for a new family)")
    return _BY_TYPE[mt]


def get_adapter(model) -> Adapter:
    return adapter_for(model.config)


__all__ = ["Adapter", "Site", "ADAPTERS", "adapter_for", "get_adapter"]
