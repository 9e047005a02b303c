"""Token selection from next-token logits: temperature, top-k, top-p, greedy.

`select_tokens` is the only place where a token is drawn. The log-prob it returns is that of the
temperature-scaled distribution *before* top-k/top-p renormalization (the Trajectory contract), so
it is exactly what `Policy.token_logprobs(..., temperature=T)` computes on the final sequence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

_NEG_INF = -jnp.inf


def filter_logits(scaled_bv: Array, top_k: int = 0, top_p: float = 1.0) -> Array:
    """Sets logits outside the top-k / top-p nucleus to -inf (top-k first, then top-p on the
    renormalized survivors, as HF and vLLM do).

    top_k keeps exactly `top_k` tokens (ties broken by index, as `lax.top_k` does); 0 = off.
    top_p keeps the smallest prefix of the descending-probability order whose mass reaches `top_p`
    (a token is kept when the mass strictly before it is < top_p, so the most likely token always
    survives); 1.0 = off.
    """
    v = scaled_bv.shape[-1]
    out = scaled_bv
    if 0 < top_k < v:
        _, idx = jax.lax.top_k(out, top_k)  # [B,k]
        keep = jnp.zeros(out.shape, bool)
        keep = keep.at[jnp.arange(out.shape[0])[:, None], idx].set(True)
        out = jnp.where(keep, out, _NEG_INF)
    if top_p < 1.0:
        # Descending order with the same index tie-break as top_k (stable sort of -logits).
        order = jnp.argsort(-out, axis=-1, stable=True)
        sorted_logits = jnp.take_along_axis(out, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        keep_sorted = mass_before < top_p
        keep_sorted = keep_sorted.at[:, 0].set(True)
        keep = jnp.zeros(out.shape, bool)
        keep = keep.at[jnp.arange(out.shape[0])[:, None], order].set(keep_sorted)
        out = jnp.where(keep, out, _NEG_INF)
    return out


def select_tokens(logits_bv: Array, key: Array, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> tuple[Array, Array]:
    """Draws one token per row from float32 logits [B,V].

    Returns (tokens [B] int32, logprobs [B] f32). With temperature > 0 the log-prob is
    log softmax(logits / temperature) at the drawn token, before top-k/top-p renormalization.
    temperature == 0 is greedy (argmax, ties to the lowest id) and the log-prob is that of the
    untempered distribution, log softmax(logits).
    """
    logits_bv = logits_bv.astype(jnp.float32)
    if temperature < 0:
        raise ValueError(f"rollout.temperature={temperature} must be >= 0 (0 = greedy)")
    if temperature == 0:
        tokens = jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
        logp_bv = jax.nn.log_softmax(logits_bv, axis=-1)
    else:
        scaled = logits_bv / temperature if temperature != 1.0 else logits_bv
        logp_bv = jax.nn.log_softmax(scaled, axis=-1)
        filtered = filter_logits(scaled, top_k, top_p)
        tokens = jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
    logprobs = jnp.take_along_axis(logp_bv, tokens[:, None], axis=-1)[:, 0]
    return tokens, logprobs
