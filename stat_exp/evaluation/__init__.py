"""Evaluators: perplexity (decoders); GLUE/SQuAD live beside it."""
