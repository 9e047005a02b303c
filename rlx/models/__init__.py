"""Models: presets, the `Policy` and `Critic` facades, and the transformer itself."""

from rlx.models.config import DTYPES, ModelConfig, preset, preset_names
from rlx.models.policy import Critic, Policy
from rlx.models.transformer import ForwardOut, KVCache, Transformer
from rlx.models import hf  # Hugging Face checkpoints: rlx.models.hf.load / save

__all__ = ["DTYPES", "Critic", "ForwardOut", "KVCache", "ModelConfig", "Policy", "Transformer",
           "preset", "preset_names"]
