"""Play whole episodes of a jittable env with a scripted policy (the oracle, random tokens, ...)
inside one jit: `reset`, then a `lax.scan` over rounds, vmapped over the batch.

This is what oracle demonstrations (supervised warm start), the fuzz tests and
`experiments/show_scaffolds.py` use; the RL rollout with a model is `rlx.rollout`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from rlx.envs import tokens as T
from rlx.envs.base import Chunk

Array = jax.Array
ActFn = Callable[[Array, Any], Chunk]   # (key, unbatched env state) -> action chunk


@struct.dataclass
class Episodes:
    """A batch of played episodes.

    tokens [B,T] int32: prompt, actions and observations back to back, then padding;
    policy_mask [B,T] bool: True on the actions' tokens (what SFT trains on);
    length [B], prompt_length [B], rounds [B] int32; reward [B] f32 (sum of env rewards);
    done [B] bool; info: the env's cumulative info at the end; task, scaffold: per row.
    """

    tokens: Array
    policy_mask: Array
    length: Array
    prompt_length: Array
    rounds: Array
    reward: Array
    done: Array
    info: dict[str, Array]
    task: Any
    scaffold: Any


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
         start: tuple[Chunk, Any] | None = None) -> Episodes:
    """Play `batch` episodes (one jit-friendly call; wrap in `jax.jit` with env/act_fn static
    via closure). Rounds stop at `done`; `max_rounds` defaults to 3 * max_steps + 2, which the
    oracle never exceeds (each planned call fails at most twice in a row). `start`: batched
    (prompt, state) to start from instead of `env.reset` (e.g. `env.reset_to` of a frozen set).
    """
    act_fn = act_fn or oracle_fn(env)
    max_rounds = max_rounds or 3 * env.max_steps + 2
    state_shape = jax.eval_shape(env.reset, key, params)[1]
    probe = jax.eval_shape(lambda k, s: act_fn(k, s), key, state_shape)
    act_size = probe.tokens.shape[-1]
    max_len = max_len or env.max_prompt_len + max_rounds * (act_size + env.max_obs_len)

    def one(key, start):
        k_reset, k_loop = jax.random.split(key)
        prompt, state = env.reset(k_reset, params) if start is None else start
        buf = T.write_chunk(jnp.full((max_len,), env.tokenizer.pad_id, jnp.int32), 0, prompt)
        idx = jnp.arange(max_len)

        def body(carry, k):
            buf, mask, pos, state, rounds, ret = carry
            k_act, k_step = jax.random.split(k)
            live = ~state.done
            act = act_fn(k_act, state)
            act = Chunk(act.tokens, jnp.where(live, act.length, 0))
            buf = T.write_chunk(buf, pos, act)
            mask = mask | ((idx >= pos) & (idx < pos + act.length))
            pos = pos + act.length
            obs, state, reward, _, _ = env.step(k_step, state, act, params)
            obs = Chunk(obs.tokens, jnp.where(live, obs.length, 0))
            buf = T.write_chunk(buf, pos, obs)
            pos = pos + obs.length
            return (buf, mask, pos, state, rounds + live, ret + reward), None

        init = (buf, jnp.zeros((max_len,), bool), prompt.length, state,
                jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32))
        keys = jax.random.split(k_loop, max_rounds)
        (buf, mask, pos, state, rounds, ret), _ = jax.lax.scan(body, init, keys)
        return Episodes(tokens=buf, policy_mask=mask, length=jnp.minimum(pos, max_len),
                        prompt_length=prompt.length, rounds=rounds, reward=ret,
                        done=state.done, info=state.stats, task=state.task,
                        scaffold=state.scaffold)

    keys = jax.random.split(key, batch)
    if start is None:
        return jax.vmap(lambda k: one(k, None))(keys)
    return jax.vmap(one)(keys, start)
