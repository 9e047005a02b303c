"""Trainer-vs-sampler token-probability mismatch metrics (the MiniMax-M1 precision-gap measure)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def mismatch_metrics(trainer_logprobs: Array, sampler_logprobs: Array,
                     mask: Array) -> dict[str, Array]:
    """How far the trainer's and the sampler's probabilities of the sampled tokens are apart.

    Over the positions where `mask` [B,T] is nonzero (all other positions are ignored), with
    p_tr = exp(trainer_logprobs), p_s = exp(sampler_logprobs), rho = p_tr / p_s:
      pearson:       Pearson correlation of p_tr and p_s (M1 reports 0.987 with a bf16 LM head,
                     0.997 with an fp32 one); NaN when either side is constant or < 2 tokens.
      max_abs_dp:    max |p_tr - p_s|.        mean_abs_dp: mean |p_tr - p_s|.
      k3_kl:         mean of rho - 1 - log rho, the k3 estimate of KL(sampler || trainer) from
                     the sampler's tokens (verl's rollout-correction `k3_kl`).
      frac_ratio_out: fraction of rho outside [0.5, 2].
      n_tokens:      number of positions compared.
    All float32 scalars; jittable.
    """
    m = jnp.asarray(mask, jnp.float32) > 0
    lt = jnp.asarray(trainer_logprobs, jnp.float32)
    ls = jnp.asarray(sampler_logprobs, jnp.float32)
    n = jnp.sum(m.astype(jnp.float32))
    denom = jnp.maximum(n, 1.0)
    mean = lambda x: jnp.sum(jnp.where(m, x, 0.0)) / denom

    pt, ps = jnp.exp(lt), jnp.exp(ls)
    ct, cs = pt - mean(pt), ps - mean(ps)
    cov, vt, vs = mean(ct * cs), mean(ct * ct), mean(cs * cs)
    # Undefined when a side is constant; tested exactly (max == min) rather than by its
    # float32 variance, which rounding leaves slightly above 0.
    varies = lambda p: jnp.max(jnp.where(m, p, -jnp.inf)) > jnp.min(jnp.where(m, p, jnp.inf))
    pearson = jnp.where(varies(pt) & varies(ps), cov / jnp.sqrt(vt * vs), jnp.nan)

    dp = jnp.abs(pt - ps)
    log_rho = jnp.clip(lt - ls, -20.0, 20.0)
    rho = jnp.exp(log_rho)
    return {
        "pearson": pearson,
        "max_abs_dp": jnp.max(jnp.where(m, dp, 0.0)),
        "mean_abs_dp": mean(dp),
        "k3_kl": mean(rho - 1.0 - log_rho),
        "frac_ratio_out": mean(((rho < 0.5) | (rho > 2.0)).astype(jnp.float32)),
        "n_tokens": n,
    }
