"""Benchmark helpers: timing with medians and the same-run matmul reference.

These machines are shared and noisy, so every figure is a median over repeats and is printed as a
ratio to a float32 matmul's FLOP/s measured in the same process.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` (its result is blocked on), after `warmup` untimed calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_flops(n: int = 1024, repeats: int = 7) -> float:
    """Float32 FLOP/s of an n x n x n matmul on the default device (the roofline reference)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    return 2.0 * n**3 / median_seconds(lambda: f(a, b), repeats)
