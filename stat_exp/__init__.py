"""stat-exp: shrink trained transformers after training (STAT and baselines), one pipeline.

``stat_exp.load(name)`` → (model, tokenizer), ``stat_exp.prune(model, tokenizer, budget=0.5, calib="c4")`` → (pruned model, report) and
``stat_exp.evaluate(model, tokenizer, task="wikitext2")`` and ``stat_exp.quantize(model, bits=8)`` are the Python entry (``stat_exp.api``); the
command line is ``python run.py`` / ``stat-exp``. Importing the package imports nothing heavy (the API loads
on first use; ``stat_exp.core`` is pure torch). ``stat_exp.register()``
registers the pruned model classes (``stat_llama``, ``stat_opt``, ``stat_bert``, ``stat_distilbert``)
with transformers' Auto classes, so ``AutoModelFor….from_pretrained(pruned_dir)`` loads a pruned save.
"""
__version__ = "0.1.0"


def register() -> None:
    """Register the pruned ``stat_<type>`` configs and model classes with the transformers Auto classes."""
    from .engine.saving import register_auto_classes

    register_auto_classes()


def __getattr__(name: str):
    if name in ("prune", "evaluate", "load", "quantize", "Report"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'stat_exp' has no attribute '{name}'")
