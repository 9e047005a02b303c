"""The decoder: a Llama/Qwen/Gemma-family transformer in Flax Linen.

Token embedding, pre-norm RMSNorm, rotary position embeddings, grouped-query attention (optional
q/k/v bias and q/k norm), SwiGLU MLP, tied or untied LM head, or a scalar value head for critics.
Family variants are config fields (see `ModelConfig`): rope scaling (linear, llama3, yarn), GeGLU,
Gemma's embedding scaling and (1 + w) norms, Gemma 2's post-norms, soft-capping, query scalar and
per-layer sliding windows (a scanned per-layer input).
Layers are one `nn.scan`, so compile time does not grow with depth and the KV cache and per-layer
hidden states come out stacked on a leading `layers` axis.

Every parameter carries logical axis names (see `rlx.sharding`); activations are constrained with
the rules and mesh given in `ShardingCtx`, so the same module runs on one CPU or on a pod.

Padding convention: rows are right-padded. The causal mask is by index, so padding after a row's
end never reaches the row's real tokens; an optional `attn_mask` [B,T] marks valid keys for
left-padded inputs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh

from rlx.models.config import ModelConfig

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ShardingCtx:
    """Mesh and logical-axis rules used for activation constraints (None: no constraints)."""

    mesh: Mesh | None = None
    rules: tuple[tuple[str, Any], ...] | None = None

    def constrain(self, x: Array, names: tuple[str | None, ...]) -> Array:
        if self.mesh is None or not self.rules:
            return x
        return nn.with_logical_constraint(x, names, rules=self.rules, mesh=self.mesh)


@struct.dataclass
class KVCache:
    """Keys and values of every layer plus each row's write position.

    `k`, `v`: [L, B, S, Hkv, Dh]. `length`: [B] int32, the number of valid positions of each row;
    the next token of row b is written at slot `length[b]`, so rows advance independently.
    """

    k: Array
    v: Array
    length: Array

    @property
    def max_len(self) -> int:
        return self.k.shape[2]


CACHE_AXES = ("layers", "act_batch", "cache_length", "act_kv_heads", "head_dim")


def rounded_to(x: Array, dtype: Any) -> Array:
    """`x` rounded to the nearest value of `dtype` (the rounding of `x.astype(dtype)`), kept in
    `x`'s dtype. A cast pair f32 -> bf16 -> f32 is not enough: XLA may run it as f32 (on CPU it
    did, inside the fused LM head and log-softmax of a forward pass, so a bf16 sampler head gave
    the f32 head's log-probs). Explicit reduce-precision ops are kept."""
    narrow, wide = jnp.finfo(dtype), jnp.finfo(x.dtype)
    if narrow.bits >= wide.bits:
        return x
    rounded = jax.lax.reduce_precision(x, exponent_bits=narrow.nexp, mantissa_bits=narrow.nmant)
    if narrow.nexp == wide.nexp:
        return rounded
    # reduce_precision flushes the narrow type's subnormals to zero; a cast keeps them.
    step = float(narrow.smallest_subnormal)
    return jnp.where(jnp.abs(x) < float(narrow.smallest_normal), jnp.round(x / step) * step,
                     rounded)


def _dense_init(cfg: ModelConfig, names: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std), names)


class RMSNorm(nn.Module):
    cfg: ModelConfig
    axis_name: str = "norm"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        # With norm_plus_one (Gemma) the stored weight w scales by (1 + w), so it starts at 0.
        init = nn.initializers.zeros if self.cfg.norm_plus_one else nn.initializers.ones
        scale = self.param(
            "scale", nn.with_logical_partitioning(init, (self.axis_name,)),
            (x.shape[-1],), self.cfg.jnp_param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.norm_eps)
        scale = scale.astype(jnp.float32)
        if self.cfg.norm_plus_one:
            scale = 1.0 + scale
        return (y * scale).astype(x.dtype)


def rope_frequencies(cfg: ModelConfig) -> tuple[Array, float]:
    """Inverse frequencies [head_dim/2] (float32) and the cos/sin scale of `cfg.rope_type`.

    The formulas are those of Hugging Face `modeling_rope_utils` (linear, llama3, yarn), so
    imported checkpoints rotate exactly as they were trained.
    """
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    factor, kind = cfg.rope_factor, cfg.rope_type
    attention_factor = cfg.rope_attention_factor or 1.0
    if kind == "linear":
        inv_freq = inv_freq / factor
    elif kind == "llama3":
        old_len = cfg.rope_original_max_len
        low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = jnp.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv_freq = jnp.where(medium, smoothed, scaled)
    elif kind == "yarn":
        if not cfg.rope_attention_factor:
            attention_factor = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0

        def correction_dim(rotations):
            return (d * math.log(cfg.rope_original_max_len / (rotations * 2 * math.pi))
                    / (2 * math.log(cfg.rope_theta)))

        lo, hi = correction_dim(cfg.rope_beta_fast), correction_dim(cfg.rope_beta_slow)
        if cfg.rope_truncate:
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, d - 1)
        hi = hi + 0.001 if lo == hi else hi
        ramp = jnp.clip((jnp.arange(d // 2, dtype=jnp.float32) - lo) / (hi - lo), 0, 1)
        extrapolation = 1 - ramp
        inv_freq = (inv_freq / factor) * (1 - extrapolation) + inv_freq * extrapolation
    return inv_freq, attention_factor


def rotary(x: Array, positions: Array, inv_freq: Array, attention_factor: float = 1.0) -> Array:
    """Rotates `x` [B,T,H,D] by `positions` [B,T] (the half-split layout of Llama/Qwen/Gemma).

    `inv_freq` [D/2] and `attention_factor` (scales cos and sin) come from `rope_frequencies`."""
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B,T,D/2]
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
    if attention_factor != 1.0:
        cos, sin = cos * attention_factor, sin * attention_factor
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


@struct.dataclass
class _Context:
    """What every layer sees besides the residual stream (broadcast over the layer scan)."""

    positions: Array          # [B,T] rotary positions of the new tokens
    query_index: Array        # [B,T] key-slot index of each new token (for the causal mask)
    key_valid: Array | None   # [B,S] or None: which key slots may be attended at all
    write_index: Array | None  # [B,T] cache slots to write, or None without a cache


class Attention(nn.Module):
    cfg: ModelConfig
    shard: ShardingCtx

    @nn.compact
    def __call__(self, x: Array, ctx: _Context, kv: tuple[Array, Array] | None,
                 window: Array | None = None, layer: Array | None = None):
        """`kv`: the stacked [L,B,S,Hkv,Dh] cache (or None) and `layer` this layer's index in it.
        `window`: this layer's sliding window (int32 scalar, 0 = full), used when the config has
        `layer_windows`."""
        cfg = self.cfg
        dt, pdt = cfg.jnp_dtype, cfg.jnp_param_dtype

        def proj(name, heads, head_axis):
            return nn.DenseGeneral(
                (heads, cfg.head_dim), use_bias=cfg.qkv_bias, dtype=dt, param_dtype=pdt,
                kernel_init=_dense_init(cfg, ("embed", head_axis, "head_dim")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                       (head_axis, "head_dim")),
                name=name)(x)

        q = proj("q_proj", cfg.n_heads, "heads")
        k = proj("k_proj", cfg.n_kv_heads, "kv_heads")
        v = proj("v_proj", cfg.n_kv_heads, "kv_heads")
        if cfg.qk_norm:
            q = RMSNorm(cfg, "head_dim", name="q_norm")(q)
            k = RMSNorm(cfg, "head_dim", name="k_norm")(k)
        inv_freq, rope_scale = rope_frequencies(cfg)
        q = rotary(q, ctx.positions, inv_freq, rope_scale)
        k = rotary(k, ctx.positions, inv_freq, rope_scale)
        q = self.shard.constrain(q, ("act_batch", "act_length", "act_heads", "head_dim"))

        if kv is not None:
            # Scatter the new keys/values into this layer's slice of the stacked cache, at each
            # row's own slots; slots past the cache end are dropped (never clamped onto earlier
            # positions). The stacked cache is the layer scan's carry, so XLA updates it in place
            # instead of copying the whole cache every decode step.
            ck, cv = kv
            rows = jnp.arange(x.shape[0])[:, None]
            ck = ck.at[layer, rows, ctx.write_index].set(k.astype(ck.dtype), mode="drop")
            cv = cv.at[layer, rows, ctx.write_index].set(v.astype(cv.dtype), mode="drop")
            keys, values, new_kv = ck[layer], cv[layer], (ck, cv)
            key_index = jnp.arange(ck.shape[2])[None, :]
        else:
            keys, values, new_kv = k, v, None
            key_index = jnp.arange(x.shape[1])[None, :]

        b, t, _, d = q.shape
        g = cfg.n_heads // cfg.n_kv_heads
        q = q.reshape(b, t, cfg.n_kv_heads, g, d)
        scores = jnp.einsum("btkgd,bskd->bkgts", q, keys.astype(dt),
                            preferred_element_type=jnp.float32) * ((cfg.query_pre_attn_scalar or d)
                                                                   ** -0.5)
        if cfg.attn_softcap:
            scores = jnp.tanh(scores / cfg.attn_softcap) * cfg.attn_softcap
        mask = key_index[:, None, :] <= ctx.query_index[:, :, None]  # [B,T,S]
        if any(cfg.layer_windows):
            # Sliding window by key slot (as Hugging Face does by cache index): the query at slot
            # i sees slots i-W+1..i; window 0 = full attention.
            mask &= (window == 0) | (key_index[:, None, :] > ctx.query_index[:, :, None] - window)
        if ctx.key_valid is not None:
            mask &= ctx.key_valid[:, None, :]
        scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(dt)
        out = jnp.einsum("bkgts,bskd->btkgd", probs, values.astype(dt))
        out = out.reshape(b, t, cfg.n_heads, d)
        out = nn.DenseGeneral(
            cfg.d_model, axis=(-2, -1), use_bias=cfg.o_bias, dtype=dt, param_dtype=pdt,
            kernel_init=_dense_init(cfg, ("heads", "head_dim", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="o_proj")(out)
        return out, new_kv


_ACTIVATIONS = {
    "silu": nn.silu,
    "gelu_tanh": functools.partial(nn.gelu, approximate=True),
    "gelu": functools.partial(nn.gelu, approximate=False),
}


class MLP(nn.Module):
    cfg: ModelConfig
    shard: ShardingCtx

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.cfg
        dense = lambda feats, names, name: nn.Dense(
            feats, use_bias=False, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
            kernel_init=_dense_init(cfg, names), name=name)
        gate = dense(cfg.d_ff, ("embed", "mlp"), "gate_proj")(x)
        up = dense(cfg.d_ff, ("embed", "mlp"), "up_proj")(x)
        h = self.shard.constrain(_ACTIVATIONS[cfg.mlp_activation](gate) * up,
                                 ("act_batch", "act_length", "act_mlp"))
        return dense(cfg.d_model, ("mlp", "embed"), "down_proj")(h)


class Block(nn.Module):
    cfg: ModelConfig
    shard: ShardingCtx

    @nn.compact
    def __call__(self, carry, layer: Array, window: Array, ctx: _Context):
        """carry = (residual stream x, stacked KV cache or None); scanned over layers."""
        cfg = self.cfg
        x, kv = carry
        h, kv = Attention(cfg, self.shard, name="attn")(
            RMSNorm(cfg, name="attn_norm")(x), ctx, kv, window, layer)
        if cfg.post_norms:
            h = RMSNorm(cfg, name="post_attn_norm")(h)
        x = x + h
        h = MLP(cfg, self.shard, name="mlp")(RMSNorm(cfg, name="mlp_norm")(x))
        if cfg.post_norms:
            h = RMSNorm(cfg, name="post_mlp_norm")(h)
        x = x + h
        x = self.shard.constrain(x, ("act_batch", "act_length", "act_embed"))
        return (x, kv), x


@struct.dataclass
class ForwardOut:
    """`hidden`: pre-head activations [B,T,D] (after the final norm). `layers`: the residual stream
    entering each layer and leaving the last, [L+1,B,T,D], when requested."""

    hidden: Array
    cache: KVCache | None
    layers: Array | None


class Transformer(nn.Module):
    """Decoder body plus an LM head (`head`) or a scalar value head (`value`)."""

    cfg: ModelConfig
    shard: ShardingCtx = ShardingCtx()
    value_head: bool = False

    def setup(self):
        cfg = self.cfg
        self.embed = nn.Embed(
            cfg.vocab_size, cfg.d_model, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
            embedding_init=_dense_init(cfg, ("vocab", "embed")), name="embed")
        self.layers = nn.scan(
            Block, variable_axes={"params": 0}, split_rngs={"params": True},
            in_axes=(0, 0, nn.broadcast), length=cfg.n_layers,
            metadata_params={nn.PARTITION_NAME: "layers"})(cfg, self.shard, name="layers")
        self.final_norm = RMSNorm(cfg, name="final_norm")
        if self.value_head:
            self.value_proj = nn.Dense(
                1, dtype=jnp.float32, param_dtype=cfg.jnp_param_dtype,
                kernel_init=_dense_init(cfg, ("embed", None)), name="value_head")
        elif not cfg.tie_embeddings:
            self.lm_head = self.param(
                "lm_head", _dense_init(cfg, ("embed", "vocab")),
                (cfg.d_model, cfg.vocab_size), cfg.jnp_param_dtype)

    def __call__(self, tokens: Array, *, positions: Array | None = None,
                 attn_mask: Array | None = None, cache: KVCache | None = None,
                 chunk_length: Array | None = None, return_layers: bool = False) -> ForwardOut:
        """Runs the body on `tokens` [B,T].

        Without `cache`: a full causal forward; `positions` default to 0..T-1 and `attn_mask`
        ([B,T], 1 = real token) excludes padding keys. With `cache`: token t of row b goes to slot
        `cache.length[b] + t` at that position; the cache length then advances by `chunk_length`
        ([B], default T), so each row keeps its own offset.
        """
        b, t = tokens.shape
        if cache is None:
            index = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
            positions = index if positions is None else positions
            key_valid = None if attn_mask is None else attn_mask.astype(bool)
            ctx = _Context(positions, index, key_valid, None)
            kv = None
        else:
            index = cache.length[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :]
            positions = index if positions is None else positions
            ctx = _Context(positions, index, None, index)
            kv = (cache.k, cache.v)

        x = self.embed(tokens)
        if self.cfg.embed_scale:
            # Rounded to the parameter dtype first, as Gemma checkpoints were trained.
            x = x * jnp.asarray(math.sqrt(self.cfg.d_model), self.cfg.jnp_param_dtype).astype(x.dtype)
        x = self.shard.constrain(x, ("act_batch", "act_length", "act_embed"))
        x_in = x
        windows = jnp.asarray(self.cfg.layer_windows or (0,) * self.cfg.n_layers, jnp.int32)
        layer_ids = jnp.arange(self.cfg.n_layers, dtype=jnp.int32)
        (x, new_kv), layer_out = self.layers((x, kv), layer_ids, windows, ctx)
        hidden = self.final_norm(x)

        new_cache = None
        if cache is not None:
            step = jnp.full((b,), t, jnp.int32) if chunk_length is None else chunk_length
            new_cache = KVCache(new_kv[0], new_kv[1],
                                jnp.minimum(cache.length + step.astype(jnp.int32), cache.max_len))
        layers = jnp.concatenate([x_in[None], layer_out], axis=0) if return_layers else None
        return ForwardOut(hidden, new_cache, layers)

    def head(self, hidden: Array, head_dtype: str | None = None) -> Array:
        """LM head in `head_dtype` (inputs, weights and accumulation); logits leave as float32."""
        from rlx.models.config import DTYPES

        hdt = DTYPES[head_dtype or self.cfg.head_dtype]
        h = rounded_to(hidden, hdt).astype(hdt)
        if self.cfg.tie_embeddings:
            w = rounded_to(self.embed.embedding, hdt).astype(hdt)
            logits = jnp.einsum("btd,vd->btv", h, w, preferred_element_type=hdt)
        else:
            w = rounded_to(self.lm_head, hdt).astype(hdt)
            logits = jnp.einsum("btd,dv->btv", h, w, preferred_element_type=hdt)
        logits = self.shard.constrain(logits, ("act_batch", "act_length", "act_vocab"))
        logits = rounded_to(logits.astype(jnp.float32), hdt)
        if self.cfg.final_softcap:
            # In float32 (Hugging Face caps in the head dtype), like every log-prob computation.
            logits = jnp.tanh(logits / self.cfg.final_softcap) * self.cfg.final_softcap
        return logits

    def value(self, hidden: Array) -> Array:
        return self.value_proj(hidden.astype(jnp.float32))[..., 0]
