"""The Trajectory: what a rollout produces and what rewards, algorithms and the trainer consume."""

from __future__ import annotations

import enum
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array


class FinishReason(enum.IntEnum):
    """Why a row stopped (stored as int32 in `Trajectory.finish_reason`)."""

    RUNNING = 0      # not finished (only seen inside the loops)
    STOP = 1         # sampled a stop token (single-segment sampling)
    LENGTH = 2       # hit max new tokens or the cache / max total length
    ENV_DONE = 3     # the environment ended the episode
    MAX_ROUNDS = 4   # the episode hit its round limit


@struct.dataclass
class Trajectory:
    """A batch of sampled sequences or episodes; everything is token arrays plus masks.

    tokens:            [B,T] int32 — prompt, policy tokens, env observations, then padding.
    policy_mask:       [B,T] bool — True exactly where the policy sampled the token; losses apply
                       only there (observations and prompts are False).
    rollout_logprobs:  [B,T] f32 — log softmax(logits / temperature) of the sampled token at
                       sampling time, before top-k/top-p renormalization; 0 where not policy.
    prompt_length:     [B] int32 — length of the initial prompt.
    length:            [B] int32 — valid length of each row (prompt + everything after it).
    finish_reason:     [B] int32 — a `FinishReason`.
    rounds:            [B] int32 — policy segments generated (1 for plain sampling).
    tool_calls:        [B] int32 — tool calls the env executed.
    truncated:         [B] bool — the row ended by a limit (LENGTH or MAX_ROUNDS) rather than
                       by a stop token or the env.
    rewards:           dict name -> [B] f32: what the rollout itself scores ("env": the summed
                       env step rewards); the trainer composes its reward with `rlx.rewards`.
    group:             [B] int32 — group id for group-relative advantages.
    info:              dict name -> [B] arrays: the env's cumulative episode info at each row's
                       final step (e.g. correctness, forbidden-tool use).
    task:              the env's task pytree per row (what rewards check against), or None.
    scaffold:          the env's scaffold choices per row (`state.scaffold` of the tool-use
                       envs: which variant of every axis rendered the episode), or None.
    stats:             dict name -> scalar: rollout-engine statistics of the whole batch
                       (decode_steps, idle_slots, idle_fraction = share of decode slots spent on
                       rows that were not sampling, policy_tokens, rounds).
    """

    tokens: Array
    policy_mask: Array
    rollout_logprobs: Array
    prompt_length: Array
    length: Array
    finish_reason: Array
    rounds: Array
    tool_calls: Array
    truncated: Array
    rewards: dict[str, Array]
    group: Array
    info: dict[str, Array]
    task: Any = None
    scaffold: Any = None
    stats: dict[str, Array] = struct.field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def valid_mask(self) -> Array:
        """[B,T] bool: positions inside each row's length."""
        return jnp.arange(self.tokens.shape[1])[None, :] < self.length[:, None]


def render_episode(tokenizer, traj: Trajectory, row: int, open_mark: str = "\u27e6",
                   close_mark: str = "\u27e7") -> str:
    """Decodes one row; the policy's own tokens are wrapped in open_mark ... close_mark."""
    toks = np.asarray(traj.tokens[row])[: int(traj.length[row])]
    mask = np.asarray(traj.policy_mask[row])[: len(toks)]
    out, start = [], 0
    for i in range(1, len(toks) + 1):
        if i == len(toks) or mask[i] != mask[start]:
            text = tokenizer.decode([int(t) for t in toks[start:i]])
            out.append(f"{open_mark}{text}{close_mark}" if mask[start] else text)
            start = i
    return "".join(out)
