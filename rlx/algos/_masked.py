"""Masked reductions shared by the algorithms (float32 throughout).

These follow verl's `verl.utils.torch_functional` helpers, with one deliberate difference: an
empty mask gives 0 instead of NaN (verl divides by `mask.sum()` and raises on an empty mask in
`masked_var`), so a minibatch whose rows are all observations or padding cannot poison a jitted
update.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def f32(x) -> Array:
    return jnp.asarray(x, jnp.float32)


def masked_sum(x: Array, mask: Array, axis=None) -> Array:
    return jnp.sum(f32(x) * f32(mask), axis=axis)


def masked_mean(x: Array, mask: Array, axis=None) -> Array:
    """sum(x * mask) / sum(mask); 0 where the mask is empty."""
    m = f32(mask)
    count = jnp.sum(m, axis=axis)
    return jnp.sum(f32(x) * m, axis=axis) / jnp.maximum(count, 1.0)


def masked_var(x: Array, mask: Array, unbiased: bool = True) -> Array:
    """Variance over masked entries; Bessel-corrected (n / (n-1)) when `unbiased`, as verl.
    With n <= 1 the correction is skipped (verl raises); the variance is then 0."""
    m = f32(mask)
    mean = masked_mean(x, m)
    var = masked_mean(jnp.square(f32(x) - mean), m)
    if unbiased:
        n = jnp.sum(m)
        var = var * jnp.where(n > 1, n / jnp.maximum(n - 1.0, 1.0), 1.0)
    return var


def masked_whiten(x: Array, mask: Array, eps: float = 1e-8) -> Array:
    """verl's `masked_whiten(shift_mean=True)`: (x - mean) * rsqrt(unbiased_var + 1e-8), with the
    statistics taken over masked entries only. Values at unmasked entries are returned as 0."""
    m = f32(mask)
    mean = masked_mean(x, m)
    var = masked_var(x, m, unbiased=True)
    return (f32(x) - mean) * jax.lax.rsqrt(var + eps) * m


def masked_max(x: Array, mask: Array) -> Array:
    """Max over masked entries; 0 where the mask is empty."""
    m = f32(mask) > 0
    return jnp.where(jnp.any(m), jnp.max(jnp.where(m, f32(x), -jnp.inf)), 0.0)


def masked_min(x: Array, mask: Array) -> Array:
    """Min over masked entries; 0 where the mask is empty."""
    m = f32(mask) > 0
    return jnp.where(jnp.any(m), jnp.min(jnp.where(m, f32(x), jnp.inf)), 0.0)
