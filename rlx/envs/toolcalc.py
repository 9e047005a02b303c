"""`toolcalc`: evaluate a multi-step arithmetic expression with calculator tools, one operation
per call, and answer in `<answer>…</answer>`.

The expression is a left-nested chain `((a0 op1 a1) op2 a2) ...` of `num_steps` operations
(+, -, *) on operands in 1..max_operand; the user prompt shows it, the tools are add/sub/mul, and
the oracle's plan is one call per operation, each on the previous call's result. A
multiplication that would take the running value past ±10**6 is replaced by an addition, so
every intermediate stays small.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rlx.envs import tokens as token_ops
from rlx.envs.base import Chunk
from rlx.envs.scaffold import axes
from rlx.envs.tool_env import Task, ToolEnv, ToolEnvParams
from rlx.tokenizer import load_default

BOUND = 10**6
OP_TEXT = (" + ", " - ", " * ")

#: Phrasings (p0, p1) of the expression X (toolcalc has no Y slot), times `axes.USER_ENDINGS`.
USER_PROMPTS = axes.user_prompt((
    ("Compute ", ""), ("What is ", ""), ("Evaluate: ", ""), ("Calculate ", ""),
    ("Work out ", ""), ("Find ", ""), ("Solve ", ""), ("Determine ", ""),
    ("Give the value of ", ""), ("Result of ", ""), ("Please compute ", ""), ("", ""),
))


class ToolCalc(ToolEnv):
    name = "toolcalc"
    tools = (axes.ADD, axes.SUB, axes.MUL, axes.REVEAL)

    def __init__(self, tokenizer=None, max_steps: int = 4):
        tok = tokenizer or load_default()
        self._op_width = max(len(tok.encode(t)) for t in OP_TEXT)   # slot_sizes needs it
        super().__init__(tok, max_steps)
        self._ops = np.array([self.tables.buf.add(t) for t in OP_TEXT], np.int32)
        self._open = self.tables.single("(")
        self._close = self.tables.single(")")

    def user_prompt_grammar(self):
        return USER_PROMPTS

    def slot_sizes(self) -> tuple[int, int]:
        # (n-1) "(", the first operand, then per step: op text, operand, ")". Operands have at
        # most 3 digits (max_operand ≤ 999).
        return self.max_steps - 1 + 3 + self.max_steps * (self._op_width + 3 + 1), 1

    def sample_task(self, key: jax.Array, params: ToolEnvParams) -> Task:
        n_max = self.max_steps
        bits = jax.random.bits(key, (2 * n_max + 2,), jnp.uint32)
        hi = jnp.clip(params.num_steps, 1, n_max)
        lo = jnp.where(params.min_steps > 0, jnp.clip(params.min_steps, 1, hi), hi)
        n = token_ops.randint(bits[0], lo, hi + 1)
        max_op = jnp.clip(params.max_operand, 1, 999)
        operands = token_ops.randint(bits[1:n_max + 2], 1, max_op + 1)
        ops = token_ops.randint(bits[n_max + 2:], 0, 3)

        def body(v, x):
            op, b = x
            op = jnp.where((op == axes.MUL) & (jnp.abs(v * b) > BOUND), axes.ADD, op)
            new = jnp.stack([v + b, v - b, v * b])[op]
            return new, (op, v, new)

        _, (ops, lhs, res) = jax.lax.scan(body, operands[0], (ops, operands[1:]))
        return Task(answer=res[n - 1], n_steps=n, plan_tool=ops.astype(jnp.int32),
                    plan_args=jnp.stack([lhs, operands[1:]], -1).astype(jnp.int32),
                    table_keys=jnp.full((1,), -10**9, jnp.int32),
                    table_values=jnp.zeros((1,), jnp.int32))

    def operands(self, task: Task) -> jax.Array:
        """[max_steps + 1] the expression's operands (a0, a1, ...)."""
        return jnp.concatenate([task.plan_args[:1, 0], task.plan_args[:, 1]])

    def task_slots(self, task: Task) -> tuple[Chunk, Chunk]:
        tb = self.tables
        n_max, n = self.max_steps, task.n_steps
        pc = token_ops.Pieces(tb.flat)
        nums_t, nums_l = jax.vmap(token_ops.render_int, (0, None, None))(
            self.operands(task), tb.digit_ids, tb.minus_id)
        num_o = pc.add(nums_t) + token_ops.NUM_LEN * jnp.arange(n_max + 1)
        open_o = pc.add(jnp.full((max(n_max - 1, 1),), self._open, jnp.int32))
        close_o = pc.add(jnp.asarray([self._close], jnp.int32))
        on = (jnp.arange(n_max) < n).astype(jnp.int32)
        op_o = jnp.asarray(self._ops[:, 0])[task.plan_tool]
        op_l = jnp.asarray(self._ops[:, 1])[task.plan_tool]
        # "(" * (n-1), a0, then per step: op, operand, ")" (not after the last step).
        step_o = jnp.stack([op_o, num_o[1:], close_o * jnp.ones_like(op_o)], -1).reshape(-1)
        step_l = jnp.stack([op_l * on, nums_l[1:] * on,
                            (jnp.arange(n_max) < n - 1).astype(jnp.int32)], -1).reshape(-1)
        offs = jnp.concatenate([jnp.stack([open_o, num_o[0]]), step_o])
        lens = jnp.concatenate([jnp.stack([n - 1, nums_l[0]]), step_l])
        x = token_ops.render_segments(pc.buf(), offs, lens, self.slot_sizes()[0], tb.pad_id)
        return x, Chunk(jnp.zeros((1,), jnp.int32), jnp.zeros((), jnp.int32))

    def expression(self, task: Task) -> str:
        """The expression as text (host): the reference for tests and the tokenizer corpus."""
        return expression_text([int(t) for t in task.plan_tool],
                               [int(a) for a in self.operands(task)], int(task.n_steps))


def expression_text(ops: list[int], nums: list[int], n: int) -> str:
    s = "(" * (n - 1) + str(nums[0])
    for i in range(n):
        s += OP_TEXT[ops[i]] + str(nums[i + 1]) + (")" if i < n - 1 else "")
    return s
