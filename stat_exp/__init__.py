"""stat-exp: shrink trained transformers after training (STAT and baselines), one pipeline."""
__version__ = "0.1.0"


def _register() -> None:
    from .surgery import register_auto_classes

    register_auto_classes()


_register()
