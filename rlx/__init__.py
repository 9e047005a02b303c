"""rlx: reinforcement-learning post-training of language models in JAX."""

from rlx import models, sharding

__all__ = ["models", "sharding"]
__version__ = "0.1.0"
