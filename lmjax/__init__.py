"""lmjax: the lineage of language models, from n-grams to BERT, as pure JAX functions and Flax Linen modules on one
training engine (Optax, Orbax, NamedSharding)."""

__version__ = "0.1.0"
