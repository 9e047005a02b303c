"""Play whole episodes of a jittable env with a scripted policy (the oracle, random tokens, ...)
inside one jit: `reset`, then a `lax.scan` over rounds, vmapped over the batch.

This is what oracle demonstrations (the supervised warm start and the TFDS demo sets), the fuzz
tests and `experiments/show_scaffolds.py` use. It returns the same `Trajectory` as the model's
rollout (`run_episodes`), with the scripted policy's tokens under `policy_mask` and no log-probs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rlx.envs import tokens as T
from rlx.envs.base import Chunk
from rlx.rollout.trajectory import FinishReason, Trajectory

Array = jax.Array
ActFn = Callable[[Array, Any], Chunk]   # (key, unbatched env state) -> action chunk


def oracle_fn(env) -> ActFn:
    return lambda key, state: env.oracle_action(state)


def random_action_fn(env, size: int = 32, p_stop: float = 0.5) -> ActFn:
    """Uniform random ids (any id of the vocab) of random length 1..size; with probability
    `p_stop` the last one is replaced by a random stop token, as a sampler would end a round."""
    vocab = env.tokenizer.vocab_size
    stops = jnp.asarray(env.stop_token_ids, jnp.int32)

    def act(key, state):
        k_tok, k_len, k_stop, k_which = jax.random.split(key, 4)
        toks = jax.random.randint(k_tok, (size,), 0, vocab)
        n = jax.random.randint(k_len, (), 1, size + 1)
        stop = stops[jax.random.randint(k_which, (), 0, stops.shape[0])]
        toks = jnp.where((jnp.arange(size) == n - 1) & (jax.random.uniform(k_stop) < p_stop),
                         stop, toks)
        return Chunk(toks.astype(jnp.int32), n.astype(jnp.int32))

    return act


def play(env, params, key: Array, batch: int, act_fn: ActFn | None = None,
         max_rounds: int | None = None, max_len: int | None = None,
         start: tuple[Chunk, Any] | None = None) -> Trajectory:
    """Play `batch` episodes (one jit-friendly call; wrap in `jax.jit` with env/act_fn static
    via closure). Rounds stop at `done`; `max_rounds` defaults to 3 * max_steps + 2, which the
    oracle never exceeds (each planned call fails at most twice in a row). `start`: batched
    (prompt, state) to start from instead of `env.reset` (e.g. `env.reset_to` of a frozen set).

    Returns a `Trajectory` laid out as `run_episodes`'s: `policy_mask` on the actions (what SFT
    trains on), `rollout_logprobs` 0, `rewards['env']` the summed env rewards, `finish_reason`
    ENV_DONE or MAX_ROUNDS (LENGTH where the row overflowed `max_len` and was cut), one group
    per row, `info` the env's info after each row's last step, `tool_calls` (`info['tool_calls']`
    where the env reports it, else the steps that did not end the episode), `task` (`env.task`)
    and the rows' `scaffold` where the env state has one.
    """
    act_fn = act_fn or oracle_fn(env)
    max_rounds = max_rounds or 3 * env.max_steps + 2
    state_shape = jax.eval_shape(env.reset, key, params)[1]
    probe = jax.eval_shape(lambda k, s: act_fn(k, s), key, state_shape)
    act_size = probe.tokens.shape[-1]
    max_len = max_len or env.max_prompt_len + max_rounds * (act_size + env.max_obs_len)

    pad_id = getattr(getattr(env, "tokenizer", None), "pad_id", 0)

    def one(key, start):
        k_reset, k_loop = jax.random.split(key)
        prompt, state = env.reset(k_reset, params) if start is None else start
        buf = T.write_chunk(jnp.full((max_len,), pad_id, jnp.int32), 0, prompt)
        idx = jnp.arange(max_len)
        no_action = Chunk(jnp.zeros((act_size,), jnp.int32), jnp.zeros((), jnp.int32))
        info_shape = jax.eval_shape(env.step, key, state, no_action, params)[4]

        def body(carry, k):
            buf, mask, pos, state, done, info, rounds, ret = carry
            k_act, k_step = jax.random.split(k)
            live = ~done
            act = act_fn(k_act, state)
            act = Chunk(act.tokens, jnp.where(live, act.length, 0))
            buf = T.write_chunk(buf, pos, act)
            mask = mask | ((idx >= pos) & (idx < pos + act.length))
            pos = pos + act.length
            obs, new_state, reward, new_done, new_info = env.step(k_step, state, act, params)
            obs = Chunk(obs.tokens, jnp.where(live, obs.length, 0))
            buf = T.write_chunk(buf, pos, obs)
            pos = pos + obs.length
            # An ended episode is not stepped on: its state, info and return stay as they were.
            state, info = jax.tree.map(lambda new, old: jnp.where(live, new, old),
                                       (new_state, new_info), (state, info))
            return (buf, mask, pos, state, done | new_done, info, rounds + live,
                    ret + jnp.where(live, reward, 0.0)), None

        info0 = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), info_shape)
        init = (buf, jnp.zeros((max_len,), bool), prompt.length, state, jnp.zeros((), bool),
                info0, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32))
        keys = jax.random.split(k_loop, max_rounds)
        (buf, mask, pos, state, done, info, rounds, ret), _ = jax.lax.scan(body, init, keys)
        reason = jnp.where(pos > max_len, FinishReason.LENGTH,
                           jnp.where(done, FinishReason.ENV_DONE, FinishReason.MAX_ROUNDS))
        tool_calls = info["tool_calls"] if "tool_calls" in info else rounds - done
        return Trajectory(
            tokens=buf, policy_mask=mask, rollout_logprobs=jnp.zeros((max_len,), jnp.float32),
            prompt_length=prompt.length, length=jnp.minimum(pos, max_len),
            finish_reason=reason.astype(jnp.int32), rounds=rounds,
            tool_calls=jnp.asarray(tool_calls, jnp.int32),
            truncated=reason != FinishReason.ENV_DONE, rewards={"env": ret},
            group=jnp.zeros((), jnp.int32), info=info, task=env.task(state),
            scaffold=getattr(state, "scaffold", None))

    keys = jax.random.split(key, batch)
    traj = (jax.vmap(lambda k: one(k, None))(keys) if start is None
            else jax.vmap(one)(keys, start))
    return traj.replace(group=jnp.arange(batch, dtype=jnp.int32))
