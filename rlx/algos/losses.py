"""Policy losses (PPO clip, GSPO, CISPO), loss aggregation, value loss and entropy, as in verl.

All inputs are [B,T] arrays over whole rows with `mask` [B,T] = 1 on the tokens that take the loss
(policy tokens, possibly minus tokens rejected by a masked-IS correction). Every computation is in
float32; a policy loss returns `(loss, metrics)` where `metrics` is a dict of float32 scalars.

The registry `POLICY_LOSSES` maps config names to functions with one signature:
`fn(logprobs, old_logprobs, advantages, mask, *, loss_agg_mode, is_weights, num_tokens, num_seqs,
horizon, **hparams) -> (loss, metrics)`; `policy_loss(kind, ...)` dispatches on it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from rlx.algos._masked import f32, masked_max, masked_mean, masked_min, masked_sum
from rlx.registry import Registry

Array = jax.Array
Metrics = dict[str, Array]

LOG_RATIO_CLAMP = 20.0  # verl clamps log(pi/pi_old) to [-20, 20] before exp (PPO, CISPO)
GSPO_LOG_RATIO_MAX = 10.0  # verl clamps GSPO's log sequence ratio from above only, at 10


# -- aggregation ---------------------------------------------------------------------------------

AGG_MODES: Registry = Registry("loss aggregation mode")


@AGG_MODES.register("token-mean")
def _token_mean(loss_mat, mask, num_tokens, num_seqs, horizon):
    n = jnp.sum(mask) if num_tokens is None else f32(num_tokens)
    return masked_sum(loss_mat, mask) / jnp.maximum(n, 1.0)


def _seq_mean(seq_losses, mask, num_seqs):
    has_tokens = (jnp.sum(mask, axis=-1) > 0).astype(jnp.float32)
    n = jnp.sum(has_tokens) if num_seqs is None else f32(num_seqs)
    return jnp.sum(seq_losses * has_tokens) / jnp.maximum(n, 1.0)


@AGG_MODES.register("seq-mean-token-sum")
def _seq_mean_token_sum(loss_mat, mask, num_tokens, num_seqs, horizon):
    return _seq_mean(masked_sum(loss_mat, mask, axis=-1), mask, num_seqs)


@AGG_MODES.register("seq-mean-token-mean")
def _seq_mean_token_mean(loss_mat, mask, num_tokens, num_seqs, horizon):
    count = jnp.sum(mask, axis=-1)
    seq = masked_sum(loss_mat, mask, axis=-1) / jnp.maximum(count, 1.0)
    return _seq_mean(seq, mask, num_seqs)


@AGG_MODES.register("seq-mean-token-sum-norm")
def _seq_mean_token_sum_norm(loss_mat, mask, num_tokens, num_seqs, horizon):
    # verl: sum(row token sums) / horizon -- a sum over rows despite the name, no mean.
    horizon = mask.shape[-1] if horizon is None else horizon
    return masked_sum(loss_mat, mask) / horizon


def agg_loss(loss_mat: Array, mask: Array, mode: str = "token-mean", *,
             num_tokens: Array | float | None = None, num_seqs: Array | float | None = None,
             horizon: float | None = None) -> Array:
    """Reduces a [B,T] loss matrix to a scalar, verl's `agg_loss`.

    - "token-mean": sum(loss * mask) / num_tokens (default: tokens in `mask`).
    - "seq-mean-token-sum": mean over rows that have tokens of each row's token sum.
    - "seq-mean-token-mean": mean over rows that have tokens of each row's token mean.
    - "seq-mean-token-sum-norm": the sum over rows of each row's token sum, divided by
      `horizon`, a CONSTANT normalizer (Dr.GRPO) -- verl's formula: despite the name there is
      no mean over rows, so the value grows with the number of rows. verl's horizon is the
      response length of its [B, response_len] tensors; rlx rows also hold the prompt, so pass
      `horizon` = the max number of generated tokens to match verl (default here: T, the row
      length). `num_seqs` does not enter.

    `num_tokens` / `num_seqs` override the local counts with global ones (verl's
    `batch_num_tokens` / `global_batch_size`), for gradient accumulation over micro-batches.
    Rows with no tokens are excluded from the seq-means, as in verl. Deviations: empty
    denominators give 0 instead of NaN, and "seq-mean-token-mean" divides by the exact token count
    rather than verl's count + 1e-8 (a relative difference below float32 resolution).
    """
    fn = AGG_MODES.get(mode)
    return fn(f32(loss_mat), f32(mask), num_tokens, num_seqs, horizon)


# -- policy losses -------------------------------------------------------------------------------

POLICY_LOSSES: Registry = Registry("policy loss")


def _ratio_metrics(log_ratio: Array, ratio: Array, mask: Array) -> Metrics:
    log_ratio, ratio = jax.lax.stop_gradient(log_ratio), jax.lax.stop_gradient(ratio)
    return {
        "approx_kl": masked_mean(-log_ratio, mask),  # verl's ppo_kl: mean of log(pi_old / pi)
        "ratio_mean": masked_mean(ratio, mask),
        "ratio_max": masked_max(ratio, mask),
        "ratio_min": masked_min(ratio, mask),
    }


def _frac(cond: Array, mask: Array) -> Array:
    return masked_mean(jax.lax.stop_gradient(cond).astype(jnp.float32), mask)


def _weighted(losses: Array, is_weights: Array | None) -> Array:
    return losses if is_weights is None else losses * jax.lax.stop_gradient(f32(is_weights))


@POLICY_LOSSES.register("ppo")
def ppo_loss(logprobs: Array, old_logprobs: Array, advantages: Array, mask: Array, *,
             clip_low: float = 0.2, clip_high: float = 0.2, clip_c: float | None = 3.0,
             loss_agg_mode: str = "token-mean", is_weights: Array | None = None,
             num_tokens=None, num_seqs=None, horizon=None) -> tuple[Array, Metrics]:
    """PPO clipped surrogate with clip-higher and dual clip, verl's `compute_policy_loss_vanilla`.

    r = exp(clamp(logp - logp_old, -20, 20));
    L1 = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))      (clip-higher: clip_low != high)
    L  = min(L1, -A clip_c) where A < 0, else L1                   (dual clip, arXiv:1912.09729)
    then `is_weights` (stop-gradient; rollout correction) multiply L and `agg_loss` reduces it.
    `clip_c=None` turns the dual clip off (verl always applies it; its default c is 3, c > 1).

    Gradient: zero for tokens clipped on the side the advantage pushes (A > 0 and r > 1+clip_high;
    A < 0 and r < 1-clip_low; A < 0 and r > clip_c), -A r grad(logp) elsewhere.

    Metrics: clipfrac (verl's pg_clipfrac: the clipped branch is active), clipfrac_high (A > 0,
    r > 1+clip_high), clipfrac_low (A < 0, r < 1-clip_low), clipfrac_dual (verl's
    pg_clipfrac_lower: the dual clip is active), approx_kl (verl's ppo_kl), ratio mean/max/min.
    """
    if clip_c is not None and clip_c <= 1.0:
        raise ValueError(f"clip_c={clip_c} must be > 1 (dual-clip PPO), or None to disable it")
    lp, old, adv, m = f32(logprobs), f32(old_logprobs), f32(advantages), f32(mask)
    log_ratio = jnp.clip(lp - old, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = jnp.exp(log_ratio)
    l_unclipped = -adv * ratio
    l_clipped = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    losses = jnp.maximum(l_unclipped, l_clipped)
    metrics = {"clipfrac": _frac(l_clipped > l_unclipped, m)}
    if clip_c is not None:
        l_dual = -adv * clip_c
        metrics["clipfrac_dual"] = _frac((losses > l_dual) & (adv < 0), m)
        losses = jnp.where(adv < 0, jnp.minimum(losses, l_dual), losses)
    else:
        metrics["clipfrac_dual"] = jnp.zeros((), jnp.float32)
    loss = agg_loss(_weighted(losses, is_weights), m, loss_agg_mode, num_tokens=num_tokens,
                    num_seqs=num_seqs, horizon=horizon)
    metrics["clipfrac_high"] = _frac((adv > 0) & (ratio > 1.0 + clip_high), m)
    metrics["clipfrac_low"] = _frac((adv < 0) & (ratio < 1.0 - clip_low), m)
    metrics.update(_ratio_metrics(log_ratio, ratio, m))
    return loss, metrics


@POLICY_LOSSES.register("gspo")
def gspo_loss(logprobs: Array, old_logprobs: Array, advantages: Array, mask: Array, *,
              clip_low: float = 3e-4, clip_high: float = 4e-4,
              loss_agg_mode: str = "seq-mean-token-mean", is_weights: Array | None = None,
              num_tokens=None, num_seqs=None, horizon=None) -> tuple[Array, Metrics]:
    """GSPO (arXiv:2507.18071), verl's `compute_policy_loss_gspo` (the GSPO-token form).

    Sequence ratio s_i = exp(mean over the row's tokens of (logp - logp_old)), the geometric mean
    of the token ratios. Per token, log s_it = logp - sg(logp) + sg(log s_i), clamped above at 10;
    s_it equals s_i in value, with gradient s_i * grad(logp). Then the PPO clip without dual clip:
    L = max(-A s_it, -A clip(s_it, 1 - clip_low, 1 + clip_high)).
    Defaults: the GSPO paper's clip range (3e-4, 4e-4) and seq-mean-token-mean aggregation.
    Deviation: verl forces "seq-mean-token-mean" whatever `loss_agg_mode` says; rlx uses the
    mode it is given (the default is verl's).

    Metrics: clipfrac (clipped branch active), clipfrac_high (A > 0, s > 1+clip_high),
    clipfrac_low (A < 0, s < 1-clip_low), approx_kl (token-level, as verl), ratio mean/max/min of
    the sequence ratio over rows with tokens.
    """
    lp, old, adv, m = f32(logprobs), f32(old_logprobs), f32(advantages), f32(mask)
    log_ratio = lp - old
    seq_log_ratio = masked_sum(log_ratio, m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
    log_s = lp - jax.lax.stop_gradient(lp) + jax.lax.stop_gradient(seq_log_ratio)[:, None]
    s = jnp.exp(jnp.minimum(log_s, GSPO_LOG_RATIO_MAX))
    l_unclipped = -adv * s
    l_clipped = -adv * jnp.clip(s, 1.0 - clip_low, 1.0 + clip_high)
    losses = jnp.maximum(l_unclipped, l_clipped)
    loss = agg_loss(_weighted(losses, is_weights), m, loss_agg_mode, num_tokens=num_tokens,
                    num_seqs=num_seqs, horizon=horizon)
    seq_mask = (jnp.sum(m, axis=-1) > 0).astype(jnp.float32)
    s_seq = jax.lax.stop_gradient(jnp.exp(jnp.minimum(seq_log_ratio, GSPO_LOG_RATIO_MAX)))
    metrics = {
        "clipfrac": _frac(l_clipped > l_unclipped, m),
        "clipfrac_high": _frac((adv > 0) & (s > 1.0 + clip_high), m),
        "clipfrac_low": _frac((adv < 0) & (s < 1.0 - clip_low), m),
        "clipfrac_dual": jnp.zeros((), jnp.float32),
        "approx_kl": masked_mean(-jax.lax.stop_gradient(log_ratio), m),
        "ratio_mean": masked_mean(s_seq, seq_mask),
        "ratio_max": masked_max(s_seq, seq_mask),
        "ratio_min": masked_min(s_seq, seq_mask),
    }
    return loss, metrics


@POLICY_LOSSES.register("cispo")
def cispo_loss(logprobs: Array, old_logprobs: Array, advantages: Array, mask: Array, *,
               clip_low: float = 1.0, clip_high: float = 0.2,
               loss_agg_mode: str = "token-mean", is_weights: Array | None = None,
               num_tokens=None, num_seqs=None, horizon=None) -> tuple[Array, Metrics]:
    """CISPO (MiniMax-M1, arXiv:2506.13585), verl's `compute_policy_loss_cispo`.

    L = -sg(clip(r, 1 - clip_low, 1 + clip_high)) * A * logp,  r = exp(clamp(logp - logp_old,
    -20, 20)). The IS weight is clipped and stop-gradiented instead of the update: every token
    keeps the gradient -w A grad(logp), including the tokens PPO would drop.

    Bounds: M1 imposes no lower bound on the IS weight (it sets eps_low large) and clips only
    from above, so that low-probability "fork" tokens keep contributing. rlx's default
    clip_low = 1.0 gives a lower bound of 0, i.e. none (ratios are positive). Set clip_low < 1 for
    verl's two-sided form (verl uses clip_ratio_low, 0.2 by default). M1 does not publish its
    eps_high; the default 0.2 is verl's clip_ratio. Default aggregation: token-mean (M1
    normalizes by the total number of tokens).

    Metrics: clipfrac (verl's: the weight differs from r), clipfrac_high (r > 1+clip_high),
    clipfrac_low (r < 1-clip_low), approx_kl, ratio mean/max/min.
    """
    lp, old, adv, m = f32(logprobs), f32(old_logprobs), f32(advantages), f32(mask)
    log_ratio = jnp.clip(lp - old, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = jnp.exp(log_ratio)
    weight = jax.lax.stop_gradient(jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high))
    losses = -weight * adv * lp
    loss = agg_loss(_weighted(losses, is_weights), m, loss_agg_mode, num_tokens=num_tokens,
                    num_seqs=num_seqs, horizon=horizon)
    metrics = {
        "clipfrac": _frac(ratio != weight, m),
        "clipfrac_high": _frac(ratio > 1.0 + clip_high, m),
        "clipfrac_low": _frac(ratio < 1.0 - clip_low, m),
        "clipfrac_dual": jnp.zeros((), jnp.float32),
    }
    metrics.update(_ratio_metrics(log_ratio, ratio, m))
    return loss, metrics


def policy_loss(kind: str, logprobs: Array, old_logprobs: Array, advantages: Array, mask: Array,
                **kwargs) -> tuple[Array, Metrics]:
    """Dispatches to the policy loss `kind` in `POLICY_LOSSES` ("ppo" | "gspo" | "cispo").

    Args: `logprobs` [B,T] under the current params (the only input that carries gradients),
    `old_logprobs` [B,T] (see `rlx.algos.select_old_logprobs`), `advantages` [B,T], `mask` [B,T];
    keyword arguments are the kind's hyper-parameters (clip_low, clip_high, clip_c for ppo) and
    `loss_agg_mode`, `is_weights` (rollout-correction weights, stop-gradient), `num_tokens`,
    `num_seqs`, `horizon` (see `agg_loss`). Keywords not given take the kind's default.
    Returns (scalar loss, dict of float32 scalar metrics).
    """
    fn: Callable = POLICY_LOSSES.get(kind)
    return fn(logprobs, old_logprobs, advantages, mask, **kwargs)


# -- value loss and entropy ----------------------------------------------------------------------


def value_loss(values: Array, returns: Array, old_values: Array, mask: Array, *,
               clip: float = 0.5, loss_agg_mode: str = "token-mean", num_tokens=None,
               num_seqs=None, horizon=None) -> tuple[Array, Metrics]:
    """Clipped value loss for PPO's critic, verl's `compute_value_loss`.

    v_clip = clip(values, old_values - clip, old_values + clip);
    loss = 0.5 * agg(max((values - returns)^2, (v_clip - returns)^2)). verl's cliprange_value
    default is 0.5. Metrics: vf_clipfrac (the clipped branch is larger), vpred_mean.
    """
    v, ret, old, m = f32(values), f32(returns), f32(old_values), f32(mask)
    v_clip = jnp.clip(v, old - clip, old + clip)
    l1, l2 = jnp.square(v - ret), jnp.square(v_clip - ret)
    loss = 0.5 * agg_loss(jnp.maximum(l1, l2), m, loss_agg_mode, num_tokens=num_tokens,
                          num_seqs=num_seqs, horizon=horizon)
    return loss, {"vf_clipfrac": _frac(l2 > l1, m),
                  "vpred_mean": masked_mean(jax.lax.stop_gradient(v), m)}


def _entropy(logits: Array) -> Array:
    # verl's logsumexp(z) - sum(p z), on z - max(z): the same value, but both terms stay small,
    # so their difference loses less to float32 cancellation.
    z = f32(logits)
    z = z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    p = jax.nn.softmax(z, axis=-1)
    return jax.nn.logsumexp(z, axis=-1) - jnp.sum(p * z, axis=-1)


def entropy_from_logits(logits: Array, *, chunk_size: int | None = None) -> Array:
    """Entropy of softmax(logits) over the last axis, in float32: logsumexp(z) - sum(p z)
    (verl's `entropy_from_logits`). Shape [..., V] -> [...].

    Each position is independent, so the function can be applied to chunks of positions (e.g.
    inside a chunked head). With `chunk_size` and [B,T,V] input it does that itself: the float32
    upcast and softmax run `chunk_size` positions at a time under `lax.map`, so low-precision
    logits are never upcast whole.
    """
    if chunk_size is None or logits.ndim != 3 or logits.shape[1] <= chunk_size:
        return _entropy(logits)
    b, t, v = logits.shape
    n = -(-t // chunk_size)
    padded = jnp.pad(logits, ((0, 0), (0, n * chunk_size - t), (0, 0)))
    chunks = padded.reshape(b, n, chunk_size, v).swapaxes(0, 1)
    out = jax.lax.map(_entropy, chunks)
    return out.swapaxes(0, 1).reshape(b, n * chunk_size)[:, :t]
