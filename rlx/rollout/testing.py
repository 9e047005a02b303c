"""Testing support: a scripted multi-round env for testing and benchmarking the rollout engine
(not a task env; used by tests/rollout and experiments/bench_rollout.py).

Its observations are a known function of (task, round, action length, step key), so tests can
rebuild the exact token layout an episode must have. `ScriptedEnv` is jittable; `ScriptedHostEnv`
is the same logic in plain Python/numpy, driven by the host loop.

Task t (drawn at reset from the key, t in [0, num_tasks)):
  prompt  = [PROMPT_BASE + 7 t + j for j < 2 + t % 4]
  step r  (r = 1, 2, ...): obs length 1 + (t + r) % 3 of
          [OBS_BASE + r, OBS_BASE + 20 + t, OBS_BASE + 40 + (action length % 16) + noise],
          noise = randint(step key, 0, 8);
  done    when r >= rounds_to_done (default 1 + t % 4; fixed when `rounds` is given);
  reward  0.1 * action length (+1 when done);
  info    {"round": r, "tool_calls": steps that were not final, "action_tokens": running sum}.
The policy's round ends at any of `num_stop` stop ids starting at STOP_BASE.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlx.envs.base import Chunk, Env, HostEnv

PROMPT_BASE, OBS_BASE, STOP_BASE = 10, 300, 400
MAX_PROMPT_LEN, MAX_OBS_LEN = 5, 3


@struct.dataclass
class ScriptedParams:
    num_tasks: int = struct.field(pytree_node=False, default=8)


@struct.dataclass
class ScriptedState:
    task: jax.Array
    round: jax.Array
    tool_calls: jax.Array
    action_tokens: jax.Array


def _rounds_to_done(task, fixed: int | None):
    return fixed if fixed is not None else 1 + task % 4


class ScriptedEnv(Env):
    """Jittable scripted env (see the module docstring)."""

    max_prompt_len = MAX_PROMPT_LEN
    max_obs_len = MAX_OBS_LEN

    def __init__(self, num_stop: int = 64, rounds: int | None = None):
        self.stop_token_ids = tuple(range(STOP_BASE, STOP_BASE + num_stop))
        self.rounds = rounds

    @property
    def default_params(self) -> ScriptedParams:
        return ScriptedParams()

    def reset_env(self, key, params: ScriptedParams):
        task = jax.random.randint(key, (), 0, params.num_tasks)
        n = 2 + task % 4
        j = jnp.arange(MAX_PROMPT_LEN)
        tokens = jnp.where(j < n, PROMPT_BASE + 7 * task + j, 0).astype(jnp.int32)
        zero = jnp.zeros((), jnp.int32)
        return Chunk(tokens, n.astype(jnp.int32)), ScriptedState(task, zero, zero, zero)

    def step_env(self, key, state: ScriptedState, action: Chunk, params: ScriptedParams):
        r = state.round + 1
        t = state.task
        noise = jax.random.randint(key, (), 0, 8)
        obs = jnp.stack([OBS_BASE + r, OBS_BASE + 20 + t,
                         OBS_BASE + 40 + action.length % 16 + noise]).astype(jnp.int32)
        n = (1 + (t + r) % 3).astype(jnp.int32)
        obs = jnp.where(jnp.arange(MAX_OBS_LEN) < n, obs, 0)
        done = r >= _rounds_to_done(t, self.rounds)
        reward = 0.1 * action.length + done.astype(jnp.float32)
        state = ScriptedState(t, r, state.tool_calls + (~done).astype(jnp.int32),
                              state.action_tokens + action.length)
        info = {"round": r, "tool_calls": state.tool_calls, "action_tokens": state.action_tokens}
        return Chunk(obs, n), state, reward.astype(jnp.float32), done, info

    def task(self, state: ScriptedState):
        return {"task": state.task}


@dataclasses.dataclass
class _HostState:
    task: int
    round: int = 0
    tool_calls: int = 0
    action_tokens: int = 0


class ScriptedHostEnv(HostEnv):
    """The same logic as `ScriptedEnv`, in plain Python over numpy (one row per call)."""

    max_prompt_len = MAX_PROMPT_LEN
    max_obs_len = MAX_OBS_LEN

    def __init__(self, num_stop: int = 64, rounds: int | None = None):
        self.stop_token_ids = tuple(range(STOP_BASE, STOP_BASE + num_stop))
        self.rounds = rounds

    @property
    def default_params(self) -> ScriptedParams:
        return ScriptedParams()

    def reset_env(self, key, params: ScriptedParams):
        task = int(jax.random.randint(key, (), 0, params.num_tasks))
        n = 2 + task % 4
        tokens = np.zeros((MAX_PROMPT_LEN,), np.int32)
        tokens[:n] = PROMPT_BASE + 7 * task + np.arange(n)
        return Chunk(tokens, np.int32(n)), _HostState(task)

    def step_env(self, key, state: _HostState, action: Chunk, params: ScriptedParams):
        r, t, alen = state.round + 1, state.task, int(action.length)
        noise = int(jax.random.randint(key, (), 0, 8))
        n = 1 + (t + r) % 3
        obs = np.zeros((MAX_OBS_LEN,), np.int32)
        obs[:n] = [OBS_BASE + r, OBS_BASE + 20 + t, OBS_BASE + 40 + alen % 16 + noise][:n]
        done = r >= _rounds_to_done(t, self.rounds)
        new = _HostState(t, r, state.tool_calls + (not done), state.action_tokens + alen)
        info = {"round": np.int32(r), "tool_calls": np.int32(new.tool_calls),
                "action_tokens": np.int32(new.action_tokens)}
        return Chunk(obs, np.int32(n)), new, np.float32(0.1 * alen + done), done, info

    def task(self, state: _HostState) -> dict[str, Any]:
        return {"task": np.int32(state.task)}
