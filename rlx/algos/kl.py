"""KL estimators against a frozen reference policy, usable in the reward or in the loss (verl).

All estimators are per token, from the log-probabilities of the sampled tokens only
(http://joschu.net/blog/kl-approx.html), with x = logp - ref_logp:
  k1 ("kl"):          x
  k2 ("mse"):         x^2 / 2
  k3 ("low_var_kl"):  exp(-x) + x - 1, with -x clamped to [-20, 20] and the result to [-10, 10]
A trailing "+" (k1+, k3+) keeps the value of the estimator but takes k2's gradient (verl's
straight-through option: k2's gradient is the unbiased one for the KL).

In the reward (verl `use_kl_in_reward`): the trainer subtracts `rl.kl_reward_coef` times a row's
summed `kl_penalty` from its outcome reward, with logp from the policy that sampled (no
gradient). In the loss (verl `use_kl_loss`):
`agg_loss(kl_penalty(logp, ref_logp, "k3"), mask, mode) * coef`, with logp carrying gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlx.algos._masked import f32
from rlx.registry import Registry

Array = jax.Array

KL_ESTIMATORS: Registry = Registry("KL estimator")
KL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3", "low_var_kl+": "k3+", "kl+": "k1+"}


@KL_ESTIMATORS.register("k1")
def _k1(logp: Array, ref_logp: Array) -> Array:
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def _k2(logp: Array, ref_logp: Array) -> Array:
    return 0.5 * jnp.square(logp - ref_logp)


@KL_ESTIMATORS.register("k3")
def _k3(logp: Array, ref_logp: Array) -> Array:
    x = jnp.clip(ref_logp - logp, -20.0, 20.0)
    return jnp.clip(jnp.exp(x) - x - 1.0, -10.0, 10.0)


def _straight_through(value_fn):
    def fn(logp: Array, ref_logp: Array) -> Array:
        grad_part = _k2(logp, ref_logp)
        return grad_part - jax.lax.stop_gradient(grad_part) + jax.lax.stop_gradient(
            value_fn(logp, ref_logp))
    return fn


KL_ESTIMATORS.register("k1+")(_straight_through(_k1))
KL_ESTIMATORS.register("k3+")(_straight_through(_k3))


def kl_penalty(logprobs: Array, ref_logprobs: Array, kind: str = "k3") -> Array:
    """Per-token KL estimate [B,T] float32 of `kind` (k1, k2, k3, k1+, k3+ or verl's names kl,
    mse, low_var_kl); see the module docstring. Not masked: multiply by, or aggregate with, the
    policy mask."""
    fn = KL_ESTIMATORS.get(KL_ALIASES.get(kind, kind))
    return fn(f32(logprobs), f32(ref_logprobs))
