"""The Env contract (gymnax style, no state in the object) and the host-side variant.

A jittable env is a stateless object with static sizes; its state and params are
`struct.dataclass` pytrees, so `reset` and `step` jit, vmap and shard:

    obs, state = env.reset(key, params)
    obs, state, reward, done, info = env.step(key, state, action, params)

`action` is the span of tokens the policy produced this round (a `Chunk`); `obs` is a padded
token `Chunk`: the prompt after `reset`, the tool response plus the next assistant prefix after
`step`. A malformed action yields an error observation, never an exception. `info` is a dict of
scalars holding the episode's cumulative statistics (the rollout keeps each row's last one).

A host env (`HostEnv`) has the same methods over numpy arrays in plain Python (real tools); the
rollout drives it from a host loop between jitted generation segments.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array


@struct.dataclass
class Chunk:
    """A padded token span: `tokens` [N] int32 (batched: [B,N]) and its valid `length` (int32)."""

    tokens: Array
    length: Array

    @classmethod
    def from_list(cls, ids: list[int], size: int, pad_id: int = 0) -> Chunk:
        if len(ids) > size:
            raise ValueError(f"chunk of {len(ids)} tokens does not fit size {size}")
        toks = np.full((size,), pad_id, np.int32)
        toks[: len(ids)] = ids
        return cls(jnp.asarray(toks), jnp.asarray(len(ids), jnp.int32))


class Env(abc.ABC):
    """Base class of jittable envs. Subclasses set the static sizes and implement
    `default_params`, `reset_env` and `step_env` as pure functions."""

    #: Static sizes: padded length of the reset observation and of every later observation.
    max_prompt_len: int = 0
    max_obs_len: int = 0
    #: Token ids on which the policy's round ends (the sampler stops the segment there).
    stop_token_ids: tuple[int, ...] = ()
    #: True for envs driven by the host loop instead of inside jit.
    jittable: bool = True

    @property
    @abc.abstractmethod
    def default_params(self) -> Any:
        """The env's default params pytree."""

    def reset(self, key: Array, params: Any = None) -> tuple[Chunk, Any]:
        params = self.default_params if params is None else params
        return self.reset_env(key, params)

    def step(self, key: Array, state: Any, action: Chunk, params: Any = None):
        params = self.default_params if params is None else params
        return self.step_env(key, state, action, params)

    @abc.abstractmethod
    def reset_env(self, key: Array, params: Any) -> tuple[Chunk, Any]:
        """Pure reset: (prompt chunk of size max_prompt_len, state)."""

    @abc.abstractmethod
    def step_env(self, key: Array, state: Any, action: Chunk, params: Any):
        """Pure step: (obs chunk of size max_obs_len, state, reward, done, info)."""

    def task(self, state: Any) -> Any:
        """The task pytree rewards check against (default: `state.task` if present)."""
        return getattr(state, "task", None)


class HostEnv(Env):
    """An env whose `step` is plain Python over numpy (e.g. a real tool). Same shapes and
    semantics as `Env`, unbatched: one row per call; the host loop calls it per row."""

    jittable = False
