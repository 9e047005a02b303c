"""The decode engine shared by `sample` and `run_episodes`: pure functions over a `RolloutState`.

Layout. Every row lives in a right-padded token buffer [B,T] (T = max_len, also the KV cache size):
[prompt | policy round 1 | obs 1 | policy round 2 | ...]. `length[b]` counts the row's tokens.

Cache invariant. Between segments the cache holds every buffer token except, after a segment, the
row's last sampled token (its "pending" token): the loop never spends a forward pass on a token
whose logits nobody needs. The next observation is appended as one chunk [pending | obs] at each
row's own offset, which restores `cache.length == length` and yields the next-token logits.

Segment. `generate_segment` samples one token from the stored logits, then runs a `lax.while_loop`
of [forward the pending token of still-active rows -> sample] that exits as soon as no row is
active. Rows that are not active ride along with chunk length 0 (their cache does not advance);
these idle slots are counted in `idle_slots` against `decode_steps * B`.

Keys. The token drawn at the s-th sampling step of the whole rollout uses fold_in(key, s); the
categorical draw is per row, so the same key gives the same tokens on any mesh.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from rlx import sharding
from rlx.models import KVCache
from rlx.rollout.config import SamplingConfig
from rlx.rollout.sampling import select_tokens
from rlx.rollout.trajectory import FinishReason, Trajectory

Array = jax.Array


@struct.dataclass
class RolloutState:
    """The carry of the decode loops (all [B] unless noted)."""

    cache: KVCache
    tokens: Array          # [B,T] int32
    policy_mask: Array     # [B,T] bool
    logprobs: Array        # [B,T] f32
    logits: Array          # [B,V] f32 next-token logits (valid where cache.length == length)
    length: Array          # int32, tokens in the buffer (incl. the pending token)
    prompt_length: Array   # int32
    seg_count: Array       # int32, tokens sampled in the current round
    active: Array          # bool, sampling in the current segment
    in_episode: Array      # bool, episode not finished
    last_stop: Array       # bool, the last sampled token was a stop token
    finish_reason: Array   # int32 FinishReason
    rounds: Array          # int32, segments the row took part in
    env_steps: Array       # int32, env.step calls on the row that did not end the episode
    env_reward: Array      # f32, sum of env step rewards
    key: Array             # sampling key (scalar)
    sample_step: Array     # int32 scalar: sampling steps so far (key schedule)
    round_index: Array     # int32 scalar: segments so far (env key schedule)
    decode_steps: Array    # int32 scalar: [B,1] forward passes in decode loops
    idle_slots: Array      # int32 scalar: rows idle in those passes


def state_specs(policy, st: RolloutState) -> RolloutState:
    """Logical specs of a rollout state (for `rlx.sharding.sharded_jit`): the KV cache by the
    policy's cache specs, every other [B, ...] field over the batch, the scalars replicated."""
    return sharding.rows_specs(st).replace(cache=policy.cache_logical_specs())


def _rows(b: int) -> Array:
    return jnp.arange(b)[:, None]


def _scatter(buf: Array, pos_bn: Array, values_bn: Array, valid_bn: Array) -> Array:
    """buf[b, pos[b,n]] = values[b,n] where valid (invalid writes are dropped)."""
    t = buf.shape[1]
    pos = jnp.where(valid_bn, pos_bn, t)
    return buf.at[_rows(buf.shape[0]), pos].set(values_bn.astype(buf.dtype), mode="drop")


def _last_logits(policy, params, hidden_bcd: Array, index_b: Array,
                 head_dtype: str | None) -> Array:
    """LM head on one position per row only (never [B,C,V] logits)."""
    h = jnp.take_along_axis(hidden_bcd, index_b[:, None, None], axis=1)  # [B,1,D]
    return policy.head(params, h, head_dtype)[:, 0]


def start(policy, params, prompts_bp: Array, prompt_length_b: Array, key: Array, max_len: int,
          head_dtype: str | None) -> RolloutState:
    """Prefills right-padded prompts [B,P] into a fresh cache of `max_len` slots."""
    b, p = prompts_bp.shape
    prompt_length_b = prompt_length_b.astype(jnp.int32)
    cache = policy.init_cache(b, max_len)
    out = policy.forward(params, prompts_bp.astype(jnp.int32), cache=cache,
                         chunk_length=prompt_length_b)
    logits = _last_logits(policy, params, out.hidden, jnp.maximum(prompt_length_b - 1, 0),
                          head_dtype)
    valid = jnp.arange(p)[None, :] < prompt_length_b[:, None]
    tokens = jnp.zeros((b, max_len), jnp.int32)
    tokens = tokens.at[:, :p].set(jnp.where(valid, prompts_bp, 0).astype(jnp.int32)[:, :max_len])
    zeros_i = jnp.zeros((b,), jnp.int32)
    scalar0 = jnp.zeros((), jnp.int32)
    return RolloutState(
        cache=out.cache, tokens=tokens, policy_mask=jnp.zeros((b, max_len), bool),
        logprobs=jnp.zeros((b, max_len), jnp.float32), logits=logits, length=prompt_length_b,
        prompt_length=prompt_length_b, seg_count=zeros_i, active=jnp.zeros((b,), bool),
        in_episode=jnp.ones((b,), bool), last_stop=jnp.zeros((b,), bool),
        finish_reason=zeros_i, rounds=zeros_i, env_steps=zeros_i,
        env_reward=jnp.zeros((b,), jnp.float32), key=key, sample_step=scalar0,
        round_index=scalar0, decode_steps=scalar0, idle_slots=scalar0)


def _sample_step(st: RolloutState, opts: SamplingConfig) -> RolloutState:
    """Draws a token for every active row from `st.logits` and writes it at the row's end."""
    t = st.tokens.shape[1]
    tok, lp = select_tokens(st.logits, jax.random.fold_in(st.key, st.sample_step),
                            opts.temperature, opts.top_k, opts.top_p)
    act = st.active
    pos = st.length[:, None]
    tokens = _scatter(st.tokens, pos, tok[:, None], act[:, None])
    mask = _scatter(st.policy_mask, pos, jnp.ones_like(tok)[:, None], act[:, None])
    logprobs = _scatter(st.logprobs, pos, lp[:, None], act[:, None])
    length = st.length + act
    seg_count = st.seg_count + act
    is_stop = (jnp.isin(tok, jnp.asarray(opts.stop_tokens, jnp.int32)) if opts.stop_tokens
               else jnp.zeros_like(act))
    still = act & ~is_stop & (seg_count < opts.max_new_tokens) & (length < t)
    return st.replace(tokens=tokens, policy_mask=mask, logprobs=logprobs, length=length,
                      seg_count=seg_count, active=still,
                      last_stop=jnp.where(act, is_stop, st.last_stop),
                      sample_step=st.sample_step + 1)


def _forward_step(policy, params, st: RolloutState, head_dtype: str | None) -> RolloutState:
    """Feeds each active row's pending token [B,1]; idle rows advance by 0."""
    b = st.length.shape[0]
    pending = jnp.take_along_axis(st.tokens, jnp.maximum(st.length - 1, 0)[:, None], axis=1)
    out = policy.forward(params, pending, cache=st.cache, chunk_length=st.active.astype(jnp.int32))
    logits = policy.head(params, out.hidden, head_dtype)[:, 0]
    idle = b - jnp.sum(st.active.astype(jnp.int32))
    return st.replace(cache=out.cache, logits=logits, decode_steps=st.decode_steps + 1,
                      idle_slots=st.idle_slots + idle)


def generate_segment(policy, params, st: RolloutState, opts: SamplingConfig) -> RolloutState:
    """One policy round for every row still in its episode: sample until a stop token,
    `max_new_tokens` this round, or the buffer end; exits when every row is done."""
    t = st.tokens.shape[1]
    active = st.in_episode & (st.length < t)
    st = st.replace(active=active, seg_count=jnp.zeros_like(st.seg_count),
                    rounds=st.rounds + active, round_index=st.round_index + 1)
    st = _sample_step(st, opts)

    def body(s):
        return _sample_step(_forward_step(policy, params, s, opts.head_dtype), opts)

    return jax.lax.while_loop(lambda s: jnp.any(s.active), body, st)


def ended_by_length(st: RolloutState) -> Array:
    """[B] bool: rows whose segment ran into the buffer end without a stop token."""
    return st.in_episode & ~st.last_stop & (st.length >= st.tokens.shape[1])


def round_actions(st: RolloutState, max_action_len: int) -> tuple[Array, Array, Array]:
    """This round's policy span per row, as (tokens [B,M], length [B], stepped [B]) where
    `stepped` marks the rows the env must step (in their episode, not cut by the length limit)."""
    start_b = st.length - st.seg_count
    idx = start_b[:, None] + jnp.arange(max_action_len)[None, :]
    valid = jnp.arange(max_action_len)[None, :] < st.seg_count[:, None]
    toks = jnp.take_along_axis(st.tokens, jnp.minimum(idx, st.tokens.shape[1] - 1), axis=1)
    toks = jnp.where(valid, toks, 0)
    stepped = st.in_episode & ~ended_by_length(st)
    return toks, st.seg_count, stepped


def apply_env_step(policy, params, st: RolloutState, obs_bo: Array, obs_length_b: Array,
                   reward_b: Array, done_b: Array, stepped_b: Array, max_rounds: int,
                   head_dtype: str | None) -> RolloutState:
    """Ends or continues each row after its env step; continuing rows get [pending | obs]
    appended to buffer and cache at their own offsets (observations: policy_mask False)."""
    t = st.tokens.shape[1]
    b, o = obs_bo.shape
    obs_length_b = jnp.where(stepped_b, obs_length_b.astype(jnp.int32), 0)
    cut = ended_by_length(st)
    out_of_rounds = st.rounds >= max_rounds
    fits = st.length + obs_length_b + 1 <= t
    done_b = done_b.astype(bool)
    cont = stepped_b & ~done_b & ~out_of_rounds & fits

    reason = st.finish_reason
    reason = jnp.where(cut, FinishReason.LENGTH, reason)
    reason = jnp.where(stepped_b & ~done_b & ~out_of_rounds & ~fits, FinishReason.LENGTH, reason)
    reason = jnp.where(stepped_b & ~done_b & out_of_rounds, FinishReason.MAX_ROUNDS, reason)
    reason = jnp.where(stepped_b & done_b, FinishReason.ENV_DONE, reason)

    st = st.replace(
        finish_reason=reason.astype(jnp.int32), in_episode=cont,
        env_reward=st.env_reward + jnp.where(stepped_b, reward_b.astype(jnp.float32), 0.0),
        env_steps=st.env_steps + (stepped_b & ~done_b))

    def append(s: RolloutState) -> RolloutState:
        pos = s.length[:, None] + jnp.arange(o)[None, :]
        valid = cont[:, None] & (jnp.arange(o)[None, :] < obs_length_b[:, None])
        tokens = _scatter(s.tokens, pos, obs_bo, valid)
        pending = jnp.take_along_axis(s.tokens, jnp.maximum(s.length - 1, 0)[:, None], axis=1)
        chunk = jnp.concatenate([pending, obs_bo.astype(jnp.int32)], axis=1)  # [B,1+O]
        out = policy.forward(params, chunk, cache=s.cache,
                             chunk_length=jnp.where(cont, 1 + obs_length_b, 0))
        logits = _last_logits(policy, params, out.hidden, obs_length_b, head_dtype)
        return s.replace(tokens=tokens, cache=out.cache, logits=logits,
                         length=s.length + jnp.where(cont, obs_length_b, 0))

    return jax.lax.cond(jnp.any(cont), append, lambda s: s, st)


def finish_sampling(st: RolloutState) -> RolloutState:
    """Finish reasons of a single segment (`sample`): STOP or LENGTH."""
    reason = jnp.where(st.last_stop, FinishReason.STOP, FinishReason.LENGTH).astype(jnp.int32)
    return st.replace(finish_reason=reason, in_episode=jnp.zeros_like(st.in_episode))


def to_trajectory(st: RolloutState, *, group: Array | None = None, info: dict | None = None,
                  task: Any = None, tool_calls: Array | None = None) -> Trajectory:
    b = st.length.shape[0]
    reason = st.finish_reason
    truncated = (reason == FinishReason.LENGTH) | (reason == FinishReason.MAX_ROUNDS)
    decode_slots = jnp.maximum(st.decode_steps * b, 1)
    stats = {
        "decode_steps": st.decode_steps,
        "idle_slots": st.idle_slots,
        "idle_fraction": st.idle_slots.astype(jnp.float32) / decode_slots.astype(jnp.float32),
        "policy_tokens": jnp.sum(st.policy_mask.astype(jnp.int32)),
        "rounds": st.round_index,
    }
    return Trajectory(
        tokens=st.tokens, policy_mask=st.policy_mask, rollout_logprobs=st.logprobs,
        prompt_length=st.prompt_length, length=st.length, finish_reason=reason,
        rounds=st.rounds, tool_calls=st.env_steps if tool_calls is None else tool_calls,
        truncated=truncated,
        rewards={"env": st.env_reward},
        group=jnp.arange(b, dtype=jnp.int32) if group is None else group.astype(jnp.int32),
        info={} if info is None else info, task=task, stats=stats)
