"""Trainer/sampler mismatch correction: truncated and masked importance sampling (verl semantics).

The sampler and the trainer compute "the same" token probabilities differently (precision,
kernels, staleness). With rho_t = pi_trainer(y_t) / pi_sampler(y_t):

- TIS, truncated IS: weights min(rho, threshold), the policy loss is multiplied by them; the mask
  is unchanged (verl `rollout_is` with a float `rollout_is_threshold`).
- MIS, masked IS: tokens (or whole rows) whose rho lies outside [threshold_lower, threshold] are
  rejected — removed from the loss mask, so they leave the normalizer too — and the kept ones are
  weighted by rho (verl's decoupled IS weights + `rollout_rs` rejection; the Token-MIS/Seq-MIS
  presets of "When Speed Kills Stability", Liu, Li et al. 2025).

Token level uses each token's rho_t; sequence level uses the row's product
rho = exp(sum over the row's tokens of log rho_t), broadcast to its tokens. Log-ratios are clamped
to [-20, 20] before exp (verl's SAFETY_BOUND). Weights are stop-gradient and 0 off the mask.

Which log-probs are "old" is a separate choice (`OldLogprobs`): recomputed by the trainer before
the update (verl's decoupled mode: PPO's ratio is pi_theta / pi_old and the IS weights correct
pi_old against the sampler, rho = exp(trainer_old - sampler)), or the sampler's own (verl's bypass
mode: pi_old = pi_sampler, PPO's ratio itself is the IS ratio; no recompute pass).
"""

from __future__ import annotations

import enum
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlx.algos._masked import f32, masked_max, masked_mean, masked_sum

Array = jax.Array
SAFETY_BOUND = 20.0


class OldLogprobs(enum.StrEnum):
    """Where PPO's pi_old comes from."""

    TRAINER = "trainer"  # recomputed by the trainer with the pre-update params (decoupled)
    SAMPLER = "sampler"  # the sampler's `Trajectory.rollout_logprobs` (bypass)


def select_old_logprobs(source: OldLogprobs | str, *, sampler: Array,
                        trainer: Array | None = None) -> Array:
    """The [B,T] old log-probs for `source` ("trainer" or "sampler"); stop-gradient."""
    try:
        source = OldLogprobs(source)
    except ValueError:
        raise ValueError(f"old log-probs source {source!r} is unknown; "
                         f"allowed: {[s.value for s in OldLogprobs]}") from None
    if source is OldLogprobs.TRAINER:
        if trainer is None:
            raise ValueError("old log-probs source 'trainer' needs the recomputed `trainer` "
                             "log-probs (or choose 'sampler')")
        return jax.lax.stop_gradient(f32(trainer))
    return jax.lax.stop_gradient(f32(sampler))


class RolloutCorrection(NamedTuple):
    """weights [B,T]: multiply the per-token policy loss (`is_weights=`). mask [B,T]: the loss mask
    after rejection (MIS), else the input mask. metrics: float32 scalars."""

    weights: Array
    mask: Array
    metrics: dict[str, Array]


MODES = ("tis", "mis")
LEVELS = ("token", "sequence")


def rollout_correction_weights(trainer_logprobs: Array, sampler_logprobs: Array, mask: Array, *,
                               level: str = "token", mode: str = "tis", threshold: float = 2.0,
                               threshold_lower: float | None = None) -> RolloutCorrection:
    """IS weights and loss mask correcting the sampler -> trainer mismatch; see the module doc.

    Args:
      trainer_logprobs, sampler_logprobs, mask: [B,T]; rho = exp(trainer - sampler).
      level: "token" or "sequence".
      mode: "tis" (truncate at `threshold`; verl default threshold 2.0) or "mis" (reject outside
        [threshold_lower, threshold]).
      threshold_lower: MIS lower bound; default 1 / threshold (verl's default for ratio-bounded
        rejection). 0 disables it.

    Returns `RolloutCorrection(weights, mask, metrics)`; metrics: is_weight_mean/max (of the
    returned weights over the input mask), truncated_frac (TIS: tokens whose rho exceeded the
    threshold) or rejected_frac / seq_rejected_frac (MIS).
    """
    if mode not in MODES:
        raise ValueError(f"rollout correction mode {mode!r} is unknown; allowed: {MODES}")
    if level not in LEVELS:
        raise ValueError(f"rollout correction level {level!r} is unknown; allowed: {LEVELS}")
    if threshold <= 0:
        raise ValueError(f"rollout correction threshold={threshold} must be positive")
    lower = 1.0 / threshold if threshold_lower is None else threshold_lower
    if mode == "mis" and not 0.0 <= lower <= threshold:
        raise ValueError(f"threshold_lower={lower} must lie in [0, threshold={threshold}]")

    m = f32(mask)
    log_ratio = jax.lax.stop_gradient(f32(trainer_logprobs) - f32(sampler_logprobs))
    if level == "token":
        log_rho = log_ratio
    else:
        log_rho = jnp.broadcast_to(masked_sum(log_ratio, m, axis=-1)[:, None], m.shape)
    rho = jnp.exp(jnp.clip(log_rho, -SAFETY_BOUND, SAFETY_BOUND)) * m

    metrics: dict[str, Array] = {}
    if mode == "tis":
        weights = jnp.minimum(rho, threshold)
        new_mask = m
        metrics["truncated_frac"] = masked_mean((rho > threshold).astype(jnp.float32), m)
    else:
        log_lower = math.log(lower) if lower > 0 else -jnp.inf
        keep = (log_rho >= log_lower) & (log_rho <= math.log(threshold))
        new_mask = m * keep.astype(jnp.float32)
        weights = rho * new_mask
        rejected = m * (1.0 - new_mask)
        metrics["rejected_frac"] = masked_mean(rejected, m)
        has_tokens = (jnp.sum(m, axis=-1) > 0).astype(jnp.float32)
        metrics["seq_rejected_frac"] = masked_mean(
            (jnp.sum(rejected, axis=-1) > 0).astype(jnp.float32), has_tokens)
    metrics["is_weight_mean"] = masked_mean(weights, m)
    metrics["is_weight_max"] = masked_max(weights, m)
    return RolloutCorrection(weights, new_mask.astype(jnp.float32), metrics)
