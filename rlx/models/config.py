"""Model configuration: named presets (as ConfigDicts) and the validated, frozen `ModelConfig`.

A preset is a plain `ml_collections.ConfigDict`, so experiment configs embed it and command-line
flags override single fields (`--config.model.head_dtype=float32`). `ModelConfig.from_config`
validates it once, naming the bad key and the allowed values, and gives the frozen (hashable)
dataclass that the Flax modules close over.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import ml_collections

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# Gated-MLP activations: silu (SwiGLU: Llama, Qwen), gelu_tanh (GeGLU with the tanh approximation:
# Gemma), gelu (exact erf GELU).
ACTIVATIONS = ("silu", "gelu_tanh", "gelu")
# Rotary frequency variants (Hugging Face `rope_scaling.rope_type`): default, linear (position
# interpolation), llama3 (Llama 3.1 band-wise scaling), yarn (Qwen2.5/Qwen3 long context).
ROPE_TYPES = ("default", "linear", "llama3", "yarn")


# The sizes every preset starts from (the `tiny` model); all other fields take the defaults of
# `ModelConfig`, so the ConfigDict and the dataclass cannot drift apart.
_BASE_SIZES = dict(vocab_size=1024, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=32,
                   d_ff=512)


def _base(**overrides: Any) -> ml_collections.ConfigDict:
    cfg = {f.name: f.default for f in dataclasses.fields(ModelConfig)
           if f.default is not dataclasses.MISSING}
    cfg.update(_BASE_SIZES)
    cfg.update(overrides)
    return ml_collections.ConfigDict(cfg)


# ~1M parameters: the Qwen2-shaped reference model of the rollout benchmark (hidden 128, 4 layers,
# 4 heads / 2 KV heads, MLP 512, vocab 512, tied embeddings, q/k/v bias).
_PRESETS = {
    "tiny": lambda: _base(qkv_bias=True),
    # ~10M parameters.
    "small": lambda: _base(d_model=256, n_layers=10, n_heads=8, n_kv_heads=4, head_dim=32, d_ff=1024,
                           qkv_bias=True),
    # ~100M parameters (with a 32k vocabulary).
    "base": lambda: _base(vocab_size=32768, d_model=768, n_layers=12, n_heads=12, n_kv_heads=4,
                          head_dim=64, d_ff=2048, rope_theta=500_000.0, max_len=4096),
}


def preset_names() -> tuple[str, ...]:
    return tuple(_PRESETS)


def preset(name: str, **overrides: Any) -> ml_collections.ConfigDict:
    """Returns the model ConfigDict of preset `name` (`tiny`, `small`, `base`) with overrides."""
    if name not in _PRESETS:
        raise ValueError(f"model preset {name!r} is unknown; known presets: {sorted(_PRESETS)}")
    cfg = _PRESETS[name]()
    for key, value in overrides.items():
        if key not in cfg:
            raise KeyError(f"model.{key} is not a model field; fields: {sorted(cfg.keys())}")
        cfg[key] = value
    return cfg


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Validated model hyper-parameters. Hashable, so modules and jit can close over it.

    Family variants (all off by default, which is the Llama/Qwen architecture):
      o_bias: bias on the attention output projection (Llama/Qwen3/Gemma `attention_bias`).
      mlp_activation: gate activation of the gated MLP, one of `ACTIVATIONS`.
      norm_plus_one: RMSNorm multiplies by (1 + w), w initialized to 0 (Gemma).
      embed_scale: token embeddings are multiplied by sqrt(d_model), rounded to param_dtype
        (Gemma); the tied LM head uses the unscaled table.
      post_norms: extra RMSNorms on the attention and MLP outputs before the residual add
        (Gemma 2: `post_attn_norm`, `post_mlp_norm`).
      query_pre_attn_scalar: attention scores are scaled by this ** -0.5; 0 means head_dim.
      attn_softcap, final_softcap: cap * tanh(x / cap) on the attention scores (before masking)
        and on the float32 logits; 0 = off (Gemma 2).
      layer_windows: per-layer sliding window W (a query attends to the W most recent key
        slots, itself included); 0 = full causal; () = every layer full.
      rope_type and rope_*: rotary frequency variant, one of `ROPE_TYPES`, with the parameters of
        Hugging Face `rope_scaling` (factor, low/high_freq_factor, original_max_position_embeddings,
        beta_fast/slow, attention_factor (0 = the variant's default), truncate).
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    qkv_bias: bool = False
    qk_norm: bool = False
    tie_embeddings: bool = True
    max_len: int = 2048
    init_std: float = 0.02
    o_bias: bool = False
    mlp_activation: str = "silu"
    norm_plus_one: bool = False
    embed_scale: bool = False
    post_norms: bool = False
    query_pre_attn_scalar: float = 0.0
    attn_softcap: float = 0.0
    final_softcap: float = 0.0
    layer_windows: tuple[int, ...] = ()
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_len: int = 0
    rope_beta_fast: float = 32.0
    rope_beta_slow: float = 1.0
    rope_attention_factor: float = 0.0
    rope_truncate: bool = True
    # Precision: activations, stored parameters, and the LM head matmul (its inputs, weights and
    # accumulation). Log-softmax, losses and KL always run in float32.
    dtype: str = "float32"
    param_dtype: str = "float32"
    head_dtype: str = "float32"

    def __post_init__(self):
        for key in ("dtype", "param_dtype", "head_dtype"):
            value = getattr(self, key)
            if value not in DTYPES:
                raise ValueError(
                    f"model.{key}={value!r} is not a dtype rlx supports; allowed: {sorted(DTYPES)}"
                )
        for key in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                    "d_ff", "max_len"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"model.{key}={value!r} must be a positive integer")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"model.n_heads={self.n_heads} is not divisible by model.n_kv_heads="
                f"{self.n_kv_heads}; allowed n_kv_heads: divisors of n_heads "
                f"{[d for d in range(1, self.n_heads + 1) if self.n_heads % d == 0]}"
            )
        if self.head_dim % 2:
            raise ValueError(f"model.head_dim={self.head_dim} must be even (rotary embeddings)")
        self._validate_variants()

    def _validate_variants(self):
        if self.mlp_activation not in ACTIVATIONS:
            raise ValueError(f"model.mlp_activation={self.mlp_activation!r} is not supported; "
                             f"allowed: {list(ACTIVATIONS)}")
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"model.rope_type={self.rope_type!r} is not supported; "
                             f"allowed: {list(ROPE_TYPES)}")
        for key in ("query_pre_attn_scalar", "attn_softcap", "final_softcap",
                    "rope_attention_factor"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"model.{key}={value!r} must be a number >= 0 (0 = off/default)")
        if not self.rope_factor > 0:
            raise ValueError(f"model.rope_factor={self.rope_factor!r} must be > 0")
        if self.rope_type in ("llama3", "yarn") and not (
                isinstance(self.rope_original_max_len, int) and self.rope_original_max_len > 0):
            raise ValueError(f"model.rope_original_max_len={self.rope_original_max_len!r} must be a "
                             f"positive integer with model.rope_type={self.rope_type!r}")
        if self.rope_type == "llama3" and not self.rope_high_freq_factor > self.rope_low_freq_factor:
            raise ValueError(f"model.rope_high_freq_factor={self.rope_high_freq_factor} must exceed "
                             f"model.rope_low_freq_factor={self.rope_low_freq_factor} (llama3 rope)")
        windows = self.layer_windows
        if not isinstance(windows, tuple):
            # Lists from a ConfigDict or JSON: store a tuple so the config stays hashable.
            windows = tuple(windows)
            object.__setattr__(self, "layer_windows", windows)
        if windows and (len(windows) != self.n_layers or any(
                isinstance(w, bool) or not isinstance(w, int) or w < 0 for w in windows)):
            raise ValueError(f"model.layer_windows={windows!r} must be () or one integer >= 0 per "
                             f"layer (model.n_layers={self.n_layers}; 0 = full attention)")

    @classmethod
    def from_config(cls, cfg: ModelConfig | ml_collections.ConfigDict | dict) -> ModelConfig:
        if isinstance(cfg, ModelConfig):
            return cfg
        values = dict(cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else cfg)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise KeyError(f"model.{unknown[0]} is not a model field; fields: {sorted(fields)}")
        return cls(**values)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @property
    def jnp_dtype(self):
        return DTYPES[self.dtype]

    @property
    def jnp_param_dtype(self):
        return DTYPES[self.param_dtype]

    @property
    def jnp_head_dtype(self):
        return DTYPES[self.head_dtype]

    def num_params(self) -> int:
        d, h, kv, hd, f, v = (self.d_model, self.n_heads, self.n_kv_heads, self.head_dim,
                              self.d_ff, self.vocab_size)
        attn = d * h * hd * 2 + d * kv * hd * 2
        if self.qkv_bias:
            attn += (h + 2 * kv) * hd
        if self.qk_norm:
            attn += 2 * hd
        if self.o_bias:
            attn += d
        layer = attn + 3 * d * f + (4 if self.post_norms else 2) * d
        return self.n_layers * layer + v * d * (1 if self.tie_embeddings else 2) + d

    def flops_per_token(self, context: int = 0) -> float:
        """Forward FLOPs for one token: 2 x matmul params (embedding lookup excluded) + attention
        over `context` cached positions."""
        d, h, kv, hd, f, v = (self.d_model, self.n_heads, self.n_kv_heads, self.head_dim,
                              self.d_ff, self.vocab_size)
        matmul_params = self.n_layers * (d * h * hd * 2 + d * kv * hd * 2 + 3 * d * f) + d * v
        attention = self.n_layers * 2 * 2 * h * hd * context
        return 2.0 * matmul_params + attention
