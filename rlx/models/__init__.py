"""Models: presets, the `Policy` and `Critic` facades, and the transformer itself."""

from rlx.models import hf  # Hugging Face checkpoints: rlx.models.hf.load / save
from rlx.models.config import DTYPES, ModelConfig, preset, preset_names
from rlx.models.policy import Critic, Policy
from rlx.models.transformer import ForwardOut, KVCache, Transformer

__all__ = ["DTYPES", "Critic", "hf", "ForwardOut", "KVCache", "ModelConfig", "Policy", "Transformer",
           "preset", "preset_names"]
