"""stat-exp: shrink trained transformers after training (STAT and baselines), one pipeline.

Importing the package imports nothing heavy (``stat_exp.core`` is pure torch). ``stat_exp.register()``
registers the pruned model classes (``stat_llama``, ``stat_opt``, ``stat_bert``, ``stat_distilbert``)
with transformers' Auto classes, so ``AutoModelFor….from_pretrained(pruned_dir)`` loads a pruned save.
"""
__version__ = "0.1.0"


def register() -> None:
    """Register the pruned ``stat_<type>`` configs and model classes with the transformers Auto classes."""
    from .engine.saving import register_auto_classes

    register_auto_classes()
