"""`sample`: continuations for a batch of prompts of different lengths, in one jitted call.

Prefill writes every prompt into a KV cache of `max_len` slots at its own length; a
`lax.while_loop` of single-token decode steps then runs until every row has sampled a stop token,
`max_new_tokens`, or reached `max_len`. See `rlx.rollout.engine` for the loop's invariants.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlx import sharding
from rlx.envs.base import Chunk
from rlx.rollout import engine
from rlx.rollout.config import SamplingConfig
from rlx.rollout.trajectory import Trajectory

Array = jax.Array
Params = Any


def _sample_fn(policy, opts: SamplingConfig, max_len: int, params, prompts, lengths, key):
    st = engine.start(policy, params, prompts, lengths, key, max_len, opts.head_dtype)
    st = engine.generate_segment(policy, params, st, opts)
    return engine.to_trajectory(engine.finish_sampling(st))


@functools.lru_cache(maxsize=32)
def _compiled(policy, opts: SamplingConfig, width: int) -> sharding.ShardedJit:
    """The compiled sampler of one (policy, options, width); jit compiles per prompt shape."""
    return sharding.sharded_jit(
        functools.partial(_sample_fn, policy, opts, width), policy.mesh, policy.rules,
        in_specs=(policy.param_logical_specs(), sharding.ROWS, sharding.ROWS,
                  sharding.REPLICATED),
        out_specs=sharding.ROWS)


def sample(policy, params: Params, prompts: Array | Chunk, key: Array, *,
           prompt_lengths: Array | None = None, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, stop_tokens: tuple[int, ...] = (), max_new_tokens: int = 64,
           max_len: int = 0, head_dtype: str | None = None) -> Trajectory:
    """Samples a continuation of every prompt.

    Args:
      policy: an `rlx.models.Policy` (with a mesh, the batch and parameters are sharded).
      params: its parameters.
      prompts: right-padded prompt tokens [B,P] int32, or a batched `Chunk` (tokens, length).
      key: PRNG key; the same key gives the same tokens.
      prompt_lengths: [B] valid prompt lengths (default: P for every row; each must be >= 1).
      temperature: 0 = greedy (argmax); otherwise softmax(logits / temperature).
      top_k, top_p: nucleus filters (0 / 1.0 = off); see `rlx.rollout.sampling.filter_logits`.
      stop_tokens: ids that end a row (the stop token is kept, as a policy token).
      max_new_tokens: at most this many tokens per row.
      max_len: total row length cap (prompt + new tokens); 0 = P + max_new_tokens.
      head_dtype: the sampler's LM-head dtype (None: the model's) — set it apart from the
        trainer's to produce the sampler/trainer precision gap on purpose.

    Returns:
      A `Trajectory` of width min(max_len, P + max_new_tokens): `policy_mask` is True exactly on
      sampled tokens, `rollout_logprobs` holds log softmax(logits / T) of each sampled token
      (before top-k/top-p; untempered for T = 0) and 0 elsewhere, `finish_reason` is STOP or
      LENGTH (`truncated` for LENGTH), `rounds` is 1. `stats` holds decode-loop statistics.
    """
    if isinstance(prompts, Chunk):
        prompts, prompt_lengths = prompts.tokens, prompts.length
    prompts = jnp.asarray(prompts, jnp.int32)
    if prompts.ndim != 2:
        raise ValueError(f"prompts must be [B,P] tokens; got shape {prompts.shape}")
    b, p = prompts.shape
    if prompt_lengths is None:
        prompt_lengths = jnp.full((b,), p, jnp.int32)
    elif not isinstance(prompt_lengths, jax.core.Tracer):
        lens = np.asarray(prompt_lengths)
        if lens.shape != (b,) or lens.min() < 1 or lens.max() > p:
            raise ValueError(f"prompt_lengths must be [{b}] values in [1, {p}]; got "
                             f"shape {lens.shape}, range [{lens.min()}, {lens.max()}]")
    opts = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                          max_new_tokens=max_new_tokens, max_len=max_len, head_dtype=head_dtype,
                          stop_tokens=tuple(stop_tokens))
    width = p + max_new_tokens if max_len == 0 else min(max_len, p + max_new_tokens)
    if width <= p:
        raise ValueError(f"rollout.max_len={max_len} leaves no room to sample after prompts of "
                         f"width {p}; allowed: max_len > {p} (or 0 = prompt + max_new_tokens)")
    sharding.check_rows(policy.mesh, policy.rules, b, "the prompt batch size")
    return _compiled(policy, opts, width)(params, prompts, jnp.asarray(prompt_lengths, jnp.int32),
                                          key)
