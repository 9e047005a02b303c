"""`kvlookup`: multi-hop retrieval over a random per-episode key→value table that only the
`lookup` tool can read.

The user prompt gives a start key and a hop count H; each lookup's value is the next key, and the
answer is the value reached after H lookups. The table is never shown, so an agent must carry
each round's tool result into the next call (a test that it uses its context). Keys and values
are distinct two-digit numbers; entries off the chain point at random keys of the table. The
add/sub tools are listed as distractors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlx.envs import tokens as token_ops
from rlx.envs.base import Chunk
from rlx.envs.scaffold import axes
from rlx.envs.tool_env import Task, ToolEnv, ToolEnvParams

KEY_LO, KEY_HI = 10, 100   # two-digit keys

#: Phrasings (p0 KEY p1 HOPS) times `axes.USER_ENDINGS`.
USER_PROMPTS = axes.user_prompt((
    ("Start at key ", ". Look up the value this many times: "),
    ("Key ", ": follow the chain, hops "), ("From ", ", do this many lookups in a row: "),
    ("Chain lookups: start ", ", hops "), ("Begin with ", " and look up the result, times "),
    ("Follow ", " through the table, steps "),
))


class KVLookup(ToolEnv):
    name = "kvlookup"
    tools = (axes.LOOKUP, axes.ADD, axes.SUB, axes.REVEAL)

    def __init__(self, tokenizer=None, max_steps: int = 4, table_size: int = 0):
        self.table_size = int(table_size) if table_size else max(8, max_steps + 1)
        if not max_steps < self.table_size <= KEY_HI - KEY_LO:
            raise ValueError(f"kvlookup needs max_steps < table_size <= {KEY_HI - KEY_LO}, got "
                             f"max_steps={max_steps}, table_size={self.table_size}")
        super().__init__(tokenizer, max_steps)

    def user_prompt_grammar(self):
        return USER_PROMPTS

    def slot_sizes(self) -> tuple[int, int]:
        return token_ops.NUM_LEN, token_ops.NUM_LEN

    def sample_task(self, key: jax.Array, params: ToolEnvParams) -> Task:
        k = self.table_size
        n_keys = KEY_HI - KEY_LO
        bits = jax.random.bits(key, (1 + n_keys + k,), jnp.uint32)
        hi = jnp.clip(params.num_steps, 1, self.max_steps)
        lo = jnp.where(params.min_steps > 0, jnp.clip(params.min_steps, 1, hi), hi)
        n = token_ops.randint(bits[0], lo, hi + 1)
        # A random permutation of the key space (one sort), first `table_size` are the keys.
        keys = KEY_LO + jnp.argsort(bits[1:1 + n_keys])[:k]
        idx = jnp.arange(k)
        other = keys[token_ops.randint(bits[1 + n_keys:], 0, k)]
        values = jnp.where(idx < n, jnp.roll(keys, -1), other)
        steps = jnp.arange(self.max_steps)
        plan_args = jnp.stack([keys[steps], jnp.zeros_like(steps)], -1)
        return Task(answer=keys[n].astype(jnp.int32), n_steps=n.astype(jnp.int32),
                    plan_tool=jnp.full((self.max_steps,), axes.LOOKUP, jnp.int32),
                    plan_args=plan_args.astype(jnp.int32), table_keys=keys.astype(jnp.int32),
                    table_values=values.astype(jnp.int32))

    def task_slots(self, task: Task) -> tuple[Chunk, Chunk]:
        tb = self.tables
        x = token_ops.render_int(task.table_keys[0], tb.digit_ids, tb.minus_id)
        y = token_ops.render_int(task.n_steps, tb.digit_ids, tb.minus_id)
        return Chunk(*x), Chunk(*y)
