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

from rlx.envs import scaffold as S
from rlx.envs import tokens as T
from rlx.envs.base import Chunk
from rlx.envs.tool_env import Task, ToolEnv, ToolEnvParams

BOUND = 10**6
OP_TEXT = (" + ", " - ", " * ")

USER_PROMPTS = S.Axis("user_prompt", train=(
    S.UserPrompt("Compute ", "."),
    S.UserPrompt("What is ", "?"),
    S.UserPrompt("Evaluate: ", ""),
    S.UserPrompt("", " = ?"),
), heldout=(
    S.UserPrompt("Please work out ", " step by step."),
    S.UserPrompt("Find the value of ", "."),
))


class ToolCalc(ToolEnv):
    name = "toolcalc"
    tools = (S.ADD, S.SUB, S.MUL, S.REVEAL)

    def __init__(self, tokenizer=None, max_steps: int = 4):
        super().__init__(tokenizer, max_steps)
        self._ops = self.tables._table(list(OP_TEXT))
        self._open = self.tables._single("(")
        self._close = self.tables._single(")")
        # _sizes ran before the op table existed; it only needs slot_sizes, which is static.

    def user_prompt_axis(self) -> S.Axis:
        return USER_PROMPTS

    def slot_sizes(self) -> tuple[int, int]:
        # (n-1) "(" + per step: op text (≤ 3 tokens), operand (≤ 3 digits), ")".
        return self.max_steps - 1 + T.NUM_LEN + self.max_steps * (3 + 3 + 1), 1

    def sample_task(self, key: jax.Array, params: ToolEnvParams) -> Task:
        n_max = self.max_steps
        k_n, k_a, k_o = jax.random.split(key, 3)
        hi = jnp.clip(params.num_steps, 1, n_max)
        lo = jnp.where(params.min_steps > 0, jnp.clip(params.min_steps, 1, hi), hi)
        n = jax.random.randint(k_n, (), lo, hi + 1)
        max_op = jnp.clip(params.max_operand, 1, 999)
        operands = jax.random.randint(k_a, (n_max + 1,), 1, max_op + 1)
        ops = jax.random.randint(k_o, (n_max,), 0, 3)

        def body(v, x):
            op, b = x
            op = jnp.where((op == S.MUL) & (jnp.abs(v * b) > BOUND), S.ADD, op)
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
        n_max = self.max_steps
        ops_t, ops_l = self._ops
        nums = self.operands(task)
        parens = jnp.full((max(n_max - 1, 1),), self._open, jnp.int32)
        close = jnp.asarray([self._close], jnp.int32)
        segs = [(parens, task.n_steps - 1), T.render_int(nums[0], tb.digit_ids, tb.minus_id)]
        for i in range(n_max):
            on = (i < task.n_steps).astype(jnp.int32)
            op = task.plan_tool[i]
            num_t, num_l = T.render_int(nums[i + 1], tb.digit_ids, tb.minus_id)
            segs += [(jnp.asarray(ops_t)[op], jnp.asarray(ops_l)[op] * on), (num_t, num_l * on),
                     (close, on * (i < task.n_steps - 1))]
        x = T.concat(segs, self.slot_sizes()[0], tb.pad_id)
        return x, Chunk(jnp.zeros((1,), jnp.int32), jnp.zeros((), jnp.int32))

    def expression(self, task: Task) -> str:
        """The expression as text (host): the reference for tests and the tokenizer corpus."""
        return expression_text([int(t) for t in task.plan_tool], [int(a) for a in self.operands(task)],
                               int(task.n_steps))


def expression_text(ops: list[int], nums: list[int], n: int) -> str:
    s = "(" * (n - 1) + str(nums[0])
    for i in range(n):
        s += OP_TEXT[ops[i]] + str(nums[i + 1]) + (")" if i < n - 1 else "")
    return s
