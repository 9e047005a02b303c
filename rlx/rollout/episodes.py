"""`run_episodes`: multi-round agent episodes (think -> tool call -> tool response -> think ...).

Each round, every row still in its episode generates until a stop token (the env's
`stop_token_ids` plus `stop_tokens`), `max_new_tokens` this round, or `max_len`; the env then steps
on the round's action span, and its observation is appended to the row — buffer and KV cache — at
the row's own offset, with `policy_mask` False. A row ends when the env says done (ENV_DONE), after
`max_rounds` rounds (MAX_ROUNDS), or when the next round would not fit in `max_len` (LENGTH). The
final observation of an ended row is not appended (the policy never acts on it).

Two drivers with identical semantics, keys and results:
* jittable env: the whole episode — reset, every round, every env step — is one jitted function
  (a `lax.while_loop` over rounds around the decode `while_loop`); no host round-trip.
* host env (`env.jittable == False`, e.g. a real tool): a Python loop calls jitted segments and
  steps the env row by row in between. The rollout state, KV cache included, stays on the device
  and is donated from stage to stage, so nothing already cached is prefilled again.

Keys: key -> (reset, sample, env). Rows of a group (`group_size` consecutive rows) reset with the
same key, so they share a task; the env key of round r for row b is split(fold_in(env, r), B)[b].
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlx import sharding
from rlx.envs.base import Chunk, Env
from rlx.rollout import engine
from rlx.rollout.config import SamplingConfig
from rlx.rollout.trajectory import Trajectory

Array = jax.Array
Params = Any


@struct.dataclass
class _EpisodeCarry:
    st: engine.RolloutState
    env_state: Any
    info: dict[str, Array]


def episode_keys(key: Array, batch_size: int, group_size: int):
    """(reset keys [B], group ids [B], sample key, env key) — shared by both drivers."""
    reset_key, sample_key, env_key = jax.random.split(key, 3)
    group_keys = jax.random.split(reset_key, batch_size // group_size)
    reset_keys = jnp.repeat(group_keys, group_size, axis=0)
    group = jnp.arange(batch_size, dtype=jnp.int32) // group_size
    return reset_keys, group, sample_key, env_key


def _step_keys(env_key: Array, round_index, batch_size: int) -> Array:
    return jax.random.split(jax.random.fold_in(env_key, round_index), batch_size)


def _where_rows(mask_b: Array, new: Any, old: Any) -> Any:
    def sel(n, o):
        m = mask_b.reshape(mask_b.shape + (1,) * (jnp.ndim(n) - 1))
        return jnp.where(m, n, o)
    return jax.tree.map(sel, new, old)


def _tool_calls(st: engine.RolloutState, info: dict) -> Array:
    """The env's own count when its info has `tool_calls`, else env steps that continued."""
    if isinstance(info, dict) and "tool_calls" in info:
        return jnp.asarray(info["tool_calls"]).astype(jnp.int32)
    return st.env_steps


# -- the on-device driver -------------------------------------------------------------------------

def _episodes_fn(policy, env: Env, opts: SamplingConfig, width: int, params, env_params,
                 keys) -> Trajectory:
    reset_keys, group, sample_key, env_key = keys
    b, m = reset_keys.shape[0], opts.max_new_tokens
    prompt, env_state = jax.vmap(env.reset, in_axes=(0, None))(reset_keys, env_params)
    st = engine.start(policy, params, prompt.tokens, prompt.length, sample_key, width,
                      opts.head_dtype)
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    action0 = Chunk(jnp.zeros((b, m), jnp.int32), jnp.zeros((b,), jnp.int32))
    info_shape = jax.eval_shape(vstep, reset_keys, env_state, action0, env_params)[4]
    info0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info_shape)

    def body(c: _EpisodeCarry) -> _EpisodeCarry:
        st = engine.generate_segment(policy, params, c.st, opts)
        toks, alen, stepped = engine.round_actions(st, m)
        obs, new_state, reward, done, info = vstep(
            _step_keys(env_key, st.round_index, b), c.env_state, Chunk(toks, alen), env_params)
        st = engine.apply_env_step(policy, params, st, obs.tokens, obs.length, reward, done,
                                   stepped, opts.max_rounds, opts.head_dtype)
        return _EpisodeCarry(st, _where_rows(stepped, new_state, c.env_state),
                             _where_rows(stepped, info, c.info))

    c = jax.lax.while_loop(lambda c: jnp.any(c.st.in_episode), body,
                           _EpisodeCarry(st, env_state, info0))
    task = jax.vmap(env.task)(c.env_state)
    traj = engine.to_trajectory(c.st, group=group, info=c.info, task=task,
                                tool_calls=_tool_calls(c.st, c.info))
    return traj.replace(scaffold=getattr(c.env_state, "scaffold", None))


# -- the host driver ------------------------------------------------------------------------------

def _start_fn(policy, width, head_dtype, params, prompts, lengths, key):
    return engine.start(policy, params, prompts, lengths, key, width, head_dtype)


def _segment_fn(policy, opts, params, st):
    st = engine.generate_segment(policy, params, st, opts)
    toks, alen, stepped = engine.round_actions(st, opts.max_new_tokens)
    return st, toks, alen, stepped


def _apply_fn(policy, opts, params, st, obs, obs_len, reward, done, stepped):
    return engine.apply_env_step(policy, params, st, obs, obs_len, reward, done, stepped,
                                 opts.max_rounds, opts.head_dtype)


def _final_fn(st, group):
    return engine.to_trajectory(st, group=group)


class _HostStages(NamedTuple):
    start: sharding.ShardedJit     # (params, prompts, lengths, key) -> state
    segment: sharding.ShardedJit   # (params, state) -> (state, actions, lengths, stepped)
    apply: sharding.ShardedJit     # (params, state, obs, obs_len, reward, done, stepped) -> state
    final: sharding.ShardedJit     # (state, group) -> Trajectory


@functools.lru_cache(maxsize=32)
def _host_stages(policy, opts: SamplingConfig, width: int) -> _HostStages:
    """The compiled segments of the host driver; the rollout state stays on the device and is
    donated from one to the next."""
    params, state = policy.param_logical_specs(), functools.partial(engine.state_specs, policy)
    rows, rep = sharding.ROWS, sharding.REPLICATED

    def jit(fn, in_specs, out_specs, donate_argnums=()):
        return sharding.sharded_jit(fn, policy.mesh, policy.rules, in_specs=in_specs,
                                    out_specs=out_specs, donate_argnums=donate_argnums)

    return _HostStages(
        start=jit(functools.partial(_start_fn, policy, width, opts.head_dtype),
                  (params, rows, rows, rep), state),
        segment=jit(functools.partial(_segment_fn, policy, opts), (params, state),
                    (state, rows, rows, rows), donate_argnums=1),
        apply=jit(functools.partial(_apply_fn, policy, opts), (params, state) + (rows,) * 5,
                  state, donate_argnums=1),
        final=jit(_final_fn, (state, rows), rows))


def _stack_rows(rows: list, batch: int) -> Any:
    """Stacks per-row pytrees (numpy leaves) into [B, ...] arrays; rows never filled are 0."""
    template = next((r for r in rows if r is not None), None)
    if template is None:
        return {}
    zero = jax.tree.map(lambda x: np.zeros_like(np.asarray(x)), template)
    return jax.tree.map(lambda *xs: jnp.asarray(np.stack([np.asarray(x) for x in xs])),
                        *[zero if r is None else r for r in rows])


def _episodes_host(policy, env: Env, opts: SamplingConfig, width: int, params, env_params,
                   keys) -> Trajectory:
    reset_keys, group, sample_key, env_key = keys
    b, o = reset_keys.shape[0], env.max_obs_len
    stages = _host_stages(policy, opts, width)

    prompts = np.zeros((b, env.max_prompt_len), np.int32)
    lengths = np.zeros((b,), np.int32)
    states: list[Any] = []
    for i in range(b):
        chunk, s = env.reset(reset_keys[i], env_params)
        n = int(chunk.length)
        prompts[i, :n] = np.asarray(chunk.tokens)[:n]
        lengths[i] = n
        states.append(s)

    st = stages.start(params, jnp.asarray(prompts), jnp.asarray(lengths), sample_key)
    infos: list[Any] = [None] * b
    while bool(np.any(np.asarray(st.in_episode))):
        st, toks, alen, stepped = stages.segment(params, st)
        toks, alen, stepped = np.asarray(toks), np.asarray(alen), np.asarray(stepped)
        keys = _step_keys(env_key, int(st.round_index), b)
        obs = np.zeros((b, o), np.int32)
        obs_len = np.zeros((b,), np.int32)
        reward = np.zeros((b,), np.float32)
        done = np.zeros((b,), bool)
        for i in np.flatnonzero(stepped):
            action = Chunk(toks[i], np.int32(alen[i]))
            ob, states[i], r, d, infos[i] = env.step(keys[i], states[i], action, env_params)
            n = int(ob.length)
            if n > o:
                raise ValueError(f"{type(env).__name__}.step returned an observation of {n} "
                                 f"tokens; its max_obs_len is {o}")
            obs[i, :n] = np.asarray(ob.tokens)[:n]
            obs_len[i], reward[i], done[i] = n, float(r), bool(d)
        st = stages.apply(params, st, jnp.asarray(obs), jnp.asarray(obs_len),
                          jnp.asarray(reward), jnp.asarray(done), jnp.asarray(stepped))

    traj = stages.final(st, group)
    info = _stack_rows(infos, b)
    tasks = [env.task(s) for s in states]
    task = None if all(t is None for t in tasks) else _stack_rows(tasks, b)
    scaffolds = [getattr(s, "scaffold", None) for s in states]
    scaffold = None if all(x is None for x in scaffolds) else _stack_rows(scaffolds, b)
    return traj.replace(info=info, task=task, scaffold=scaffold,
                        tool_calls=_tool_calls(st, info))


# -- the public entry point -----------------------------------------------------------------------

def resolve_max_len(env: Env, max_len: int, max_rounds: int, max_new_tokens: int) -> int:
    """`rollout.max_len` checked against `env`'s prompts; 0 = the worst case (see
    `run_episodes`)."""
    if max_len == 0:
        max_len = env.max_prompt_len + max_rounds * (max_new_tokens + env.max_obs_len)
    if max_len <= env.max_prompt_len:
        raise ValueError(f"rollout.max_len={max_len} leaves no room after prompts of "
                         f"{type(env).__name__}.max_prompt_len={env.max_prompt_len}; allowed: "
                         f"max_len > {env.max_prompt_len}")
    return max_len


def run_episodes(policy, params: Params, env: Env, env_params: Any, key: Array, *,
                 batch_size: int, group_size: int = 1, max_rounds: int = 8,
                 max_new_tokens: int = 64, max_len: int = 0, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, head_dtype: str | None = None,
                 stop_tokens: tuple[int, ...] = (), host_loop: bool | None = None) -> Trajectory:
    """Runs `batch_size` multi-round episodes of `env` with the policy.

    Args:
      policy, params: the policy (with a mesh: batch and parameters sharded) and its parameters.
      env, env_params: an `rlx.envs.Env` and its params (None: `env.default_params`).
      key: PRNG key; the same key gives the same episodes, on either driver and any mesh.
      batch_size: rows B (a multiple of group_size and of the mesh's data-axis size).
      group_size: G consecutive rows share a reset key (the same task) for group-relative
        advantages; `Trajectory.group` holds row // G.
      max_rounds: policy rounds per episode.
      max_new_tokens: tokens per round (also the padded size of the action chunk given to
        `env.step`). A round that hits it without a stop token still goes to the env as its action.
      max_len: total row length and KV-cache size; 0 = the worst case
        max_prompt_len + max_rounds * (max_new_tokens + max_obs_len).
      temperature, top_k, top_p, head_dtype: as in `rlx.rollout.sample`.
      stop_tokens: stop ids besides `env.stop_token_ids`.
      host_loop: force the host driver (True) or the on-device one (False); default: host
        exactly when `env.jittable` is False.

    Returns:
      A `Trajectory` with the interleaved layout [prompt | policy 1 | obs 1 | policy 2 | ...];
      `rounds` (policy segments), `tool_calls` (`info['tool_calls']` if the env reports it, else
      env steps that continued the episode), `finish_reason` (ENV_DONE, MAX_ROUNDS or LENGTH),
      `truncated` (MAX_ROUNDS or LENGTH), `rewards['env']` (sum of env step rewards), `group`,
      `info` (each row's last env info), `task` (`env.task` of each row's final state),
      `scaffold` (the rows' scaffold choices, where the env state has them) and `stats`
      (decode steps, idle fraction).
    """
    env_params = env.default_params if env_params is None else env_params
    if batch_size % group_size:
        raise ValueError(f"rollout.batch_size={batch_size} is not a multiple of "
                         f"rollout.group_size={group_size}")
    max_len = resolve_max_len(env, max_len, max_rounds, max_new_tokens)
    opts = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                          max_new_tokens=max_new_tokens, max_len=max_len, max_rounds=max_rounds,
                          head_dtype=head_dtype,
                          stop_tokens=tuple(stop_tokens) + tuple(env.stop_token_ids))
    sharding.check_rows(policy.mesh, policy.rules, batch_size, "rollout.batch_size")
    host = (not env.jittable) if host_loop is None else host_loop
    # Keys are derived outside the compiled function, so group_size is not part of its shape.
    keys = episode_keys(key, batch_size, group_size)
    if host:
        return _episodes_host(policy, env, opts, max_len, params, env_params, keys)
    return _compiled_episodes(policy, env, opts, max_len)(params, env_params, keys)


@functools.lru_cache(maxsize=32)
def _compiled_episodes(policy, env: Env, opts: SamplingConfig, width: int) -> sharding.ShardedJit:
    """The on-device driver of one (policy, env, options, width): (params, env params, keys)
    -> Trajectory. Env params are replicated (their tables are not batch arrays)."""
    return sharding.sharded_jit(
        functools.partial(_episodes_fn, policy, env, opts, width), policy.mesh, policy.rules,
        in_specs=(policy.param_logical_specs(), sharding.REPLICATED, sharding.ROWS),
        out_specs=sharding.ROWS)
