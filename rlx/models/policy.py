"""`Policy` and `Critic`: the functional face of the transformer.

Both are plain Python objects over a frozen `ModelConfig`; parameters are passed in and returned
as pytrees of arrays, so every method can be jitted, vmapped and sharded by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from rlx.models.config import DTYPES, ModelConfig
from rlx.models.transformer import CACHE_AXES, ForwardOut, KVCache, ShardingCtx, Transformer

Array = jax.Array
Params = Any


def _chunked_over_time(fn: Callable[[Array, Array], Array], hidden: Array, targets: Array,
                       chunk: int) -> Array:
    """Applies fn(hidden[:, c], targets[:, c]) -> [B,c,...] chunk by chunk along time (lax.map),
    so only [B, chunk, V] logits are ever live."""
    b, t, d = hidden.shape
    n = -(-t // chunk)
    pad = n * chunk - t
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    hs = hidden.reshape(b, n, chunk, d).swapaxes(0, 1)
    ts = targets.reshape(b, n, chunk).swapaxes(0, 1)
    # Rematerialized per chunk: under jax.grad the map would otherwise keep every chunk's
    # [B, chunk, V] logits as residuals, i.e. the full [B,T,V] the chunking is meant to avoid.
    out = jax.lax.map(jax.checkpoint(lambda xs: fn(*xs)), (hs, ts))  # [n, B, chunk, ...]
    out = out.swapaxes(0, 1)
    return out.reshape(b, n * chunk, *out.shape[3:])[:, :t]


class Policy:
    """A causal LM policy.

    Args:
      cfg: a model ConfigDict (e.g. `rlx.models.preset("tiny")`) or a `ModelConfig`.
      mesh, rules: optional mesh and logical-axis rules; when given, activations are constrained
        to their logical shardings inside the forward pass.
    """

    def __init__(self, cfg: ModelConfig | ml_collections.ConfigDict | dict, *,
                 mesh: jax.sharding.Mesh | None = None,
                 rules: tuple[tuple[str, Any], ...] | None = None):
        self.cfg = ModelConfig.from_config(cfg)
        self.mesh = mesh
        self.rules = None if rules is None else tuple((k, v) for k, v in rules)
        self.module = Transformer(self.cfg, ShardingCtx(mesh, self.rules), **self._module_kwargs())

    def _module_kwargs(self) -> dict:
        return {}

    def _init_apply(self, module: Transformer, tokens: Array) -> Array:
        return module.head(module(tokens).hidden)

    # -- parameters -------------------------------------------------------------------------

    def init(self, key: Array) -> Params:
        """Fresh parameters (plain arrays, no partitioning boxes)."""
        return nn.unbox(self._boxed_init(key))

    def _boxed_init(self, key: Array):
        tokens = jnp.zeros((1, 1), jnp.int32)
        return self.module.init(key, tokens, method=self._init_apply)["params"]

    def param_logical_specs(self) -> Params:
        """Logical PartitionSpecs of every parameter (names like ('layers', 'embed', 'mlp'))."""
        boxed = jax.eval_shape(self._boxed_init, jax.random.key(0))
        return nn.get_partition_spec(boxed)

    def abstract_params(self) -> Params:
        return nn.unbox(jax.eval_shape(self._boxed_init, jax.random.key(0)))

    # -- forward ----------------------------------------------------------------------------

    def forward(self, params: Params, tokens: Array, **kwargs) -> ForwardOut:
        """The body: pre-head hidden states, updated cache, optional per-layer residuals.
        Keyword arguments are those of `Transformer.__call__`."""
        return self.module.apply({"params": params}, tokens, **kwargs)

    def head(self, params: Params, hidden: Array, head_dtype: str | None = None) -> Array:
        """LM head on pre-head hidden states -> float32 logits [..., V]."""
        if head_dtype is not None and head_dtype not in DTYPES:
            raise ValueError(f"head_dtype={head_dtype!r} is not allowed; allowed: {sorted(DTYPES)}")
        return self.module.apply({"params": params}, hidden, head_dtype,
                                 method=Transformer.head)

    def logits(self, params: Params, tokens: Array, *, attn_mask: Array | None = None,
               positions: Array | None = None, head_dtype: str | None = None) -> Array:
        """Full causal forward: float32 logits [B,T,V]; entry t predicts token t+1."""
        out = self.forward(params, tokens, attn_mask=attn_mask, positions=positions)
        return self.head(params, out.hidden, head_dtype)

    def token_logprobs(self, params: Params, tokens: Array, *, attn_mask: Array | None = None,
                       positions: Array | None = None, head_dtype: str | None = None,
                       temperature: float = 1.0, chunk_size: int | None = 512) -> Array:
        """[B,T] float32: entry t = log p(tokens[t] | tokens[<t]) (entry 0, with no context, is 0).

        `temperature` divides the logits first (to match a sampler's log-probs). The head and the
        log-softmax run `chunk_size` positions at a time, so [B,T,V] float32 logits are never
        materialized for long sequences (None: all at once).
        """
        return self.token_stats(params, tokens, attn_mask=attn_mask, positions=positions,
                                head_dtype=head_dtype, temperature=temperature,
                                chunk_size=chunk_size, entropy=False)[0]

    def token_stats(self, params: Params, tokens: Array, *, attn_mask: Array | None = None,
                    positions: Array | None = None, head_dtype: str | None = None,
                    temperature: float = 1.0, chunk_size: int | None = 512,
                    entropy: bool = True) -> tuple[Array, Array | None]:
        """(log-probs [B,T], entropies [B,T] or None), aligned like `token_logprobs`: entry t
        belongs to the distribution that predicts tokens[t]; entry 0 is 0. Float32, chunked."""
        hidden = self.forward(params, tokens, attn_mask=attn_mask, positions=positions).hidden
        hidden, targets = hidden[:, :-1], tokens[:, 1:]

        def chunk_fn(h, tgt):
            logits = self.head(params, h, head_dtype)
            if temperature != 1.0:
                logits = logits / temperature
            logz = jax.nn.logsumexp(logits, axis=-1)
            lp = jnp.take_along_axis(logits, tgt[..., None], axis=-1)[..., 0] - logz
            if not entropy:
                return lp
            ent = logz - jnp.sum(jax.nn.softmax(logits, axis=-1) * logits, axis=-1)
            return jnp.stack([lp, ent], axis=-1)

        t = hidden.shape[1]
        if chunk_size is None or t <= chunk_size:
            out = chunk_fn(hidden, targets)
        else:
            out = _chunked_over_time(chunk_fn, hidden, targets, chunk_size)
        pad = ((0, 0), (1, 0)) + (((0, 0),) if entropy else ())
        out = jnp.pad(out, pad)
        return (out[..., 0], out[..., 1]) if entropy else (out, None)

    # -- KV cache ---------------------------------------------------------------------------

    def init_cache(self, batch: int, max_len: int | None = None,
                   dtype: str | None = None) -> KVCache:
        """An empty cache: every row at length 0. Default dtype: the model's activation dtype."""
        cfg = self.cfg
        max_len = cfg.max_len if max_len is None else max_len
        dt = DTYPES[dtype or cfg.dtype]
        shape = (cfg.n_layers, batch, max_len, cfg.n_kv_heads, cfg.head_dim)
        return KVCache(jnp.zeros(shape, dt), jnp.zeros(shape, dt), jnp.zeros((batch,), jnp.int32))

    def cache_logical_specs(self) -> KVCache:
        spec = jax.sharding.PartitionSpec(*CACHE_AXES)
        return KVCache(spec, spec, jax.sharding.PartitionSpec("act_batch"))

    def extend(self, params: Params, cache: KVCache, tokens: Array,
               chunk_length: Array | None = None, *, head_dtype: str | None = None,
               positions: Array | None = None) -> tuple[Array, KVCache]:
        """Appends `tokens` [B,C] to every row at its own offset `cache.length[b]`.

        Row b advances by `chunk_length[b]` (default C); tokens past it are padding whose cache
        slots are overwritten by the row's next write. Returns float32 logits [B,C,V] for the
        chunk and the new cache. Prefill is `extend` on an empty cache with the prompt lengths.
        """
        out = self.forward(params, tokens, cache=cache, chunk_length=chunk_length,
                           positions=positions)
        return self.head(params, out.hidden, head_dtype), out.cache

    def prefill(self, params: Params, tokens: Array, lengths: Array, max_len: int, *,
                head_dtype: str | None = None) -> tuple[Array, KVCache]:
        """Prefills a right-padded prompt batch [B,T] with per-row `lengths` into a new cache."""
        cache = self.init_cache(tokens.shape[0], max_len)
        return self.extend(params, cache, tokens, lengths, head_dtype=head_dtype)


class Critic(Policy):
    """The same decoder with a scalar value head (for PPO): `values(params, tokens) -> [B,T]`."""

    def _module_kwargs(self) -> dict:
        return {"value_head": True}

    def _init_apply(self, module: Transformer, tokens: Array) -> Array:
        return module.value(module(tokens).hidden)

    def values(self, params: Params, tokens: Array, *, attn_mask: Array | None = None) -> Array:
        """Float32 values [B,T] aligned like `token_logprobs`: entry t is V(tokens[:t]), the value
        of the state in which tokens[t] is generated (read off position t-1); entry 0 is 0."""
        hidden = self.forward(params, tokens, attn_mask=attn_mask).hidden
        v = self.module.apply({"params": params}, hidden[:, :-1], method=Transformer.value)
        return jnp.pad(v, ((0, 0), (1, 0)))

    def logits(self, *args, **kwargs):
        raise TypeError("Critic has a value head, not an LM head; use values()")

    token_logprobs = logits
