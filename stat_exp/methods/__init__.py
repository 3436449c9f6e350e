"""Method registry: name -> class (constructed with the method config's keyword options)."""
from ..errors import UserError
from .base import Context, Method
from .kwon import Kwon
from .simple import FLAP, Magnitude, Random, WandaSP
from .stat import VARIANTS, variant

METHODS: dict[str, type[Method]] = {m.name: m for m in (Random, Magnitude, WandaSP, FLAP, Kwon)}
METHODS.update({name: variant(name) for name in VARIANTS})


def build(name: str, **options) -> Method:
    if name not in METHODS:
        raise UserError(f"unknown method '{name}'; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name](**options)


__all__ = ["Context", "Method", "METHODS", "build"]
