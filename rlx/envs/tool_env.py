"""`ToolEnv`: the shared machinery of the jittable multi-round tool-use tasks.

An episode: `reset` samples a task and a scaffold (`rlx.envs.scaffold`) and renders the prompt
(system prompt with the tool list, user turn with the task, assistant-turn prefix). Each `step`
parses the policy's round (its tokens up to a stop token) in the episode's call syntax:

- `<answer>N</answer>` ends the episode (`correct` when N equals the task's answer);
- a well-formed call of a listed tool runs it (or, with the fault rate's probability, fails
  with a `fault` error; at most `MAX_CONSECUTIVE_FAULTS` in a row so an agent that retries
  always gets through) and the observation is the tool turn with the result;
- anything else (random tokens, unclosed call, wrong argument count, unknown tool) is an error
  observation in the scaffold's error style; a round without a call that contains EOS ends the
  episode unanswered.

The observation after a call is `asst_end tool_start RESULT|ERROR tool_end asst_start` of the
episode's chat template. Tasks subclass `ToolEnv` and provide `sample_task`, `task_slots`
(the user-prompt slots) and the `user_prompt` grammar; tools (add/sub/mul/lookup/reveal) are
shared. What the episode shows and how a round is read live in `rlx.envs.scaffold`; this class
holds the episode logic only.

Params (`ToolEnvParams`, a pytree, so sweeps can vmap it): see the field comments. Static sizes
(`max_steps`, and `table_size` for kvlookup) are constructor arguments because they set shapes.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlx.envs import tokens as token_ops
from rlx.envs.base import Chunk, Env
from rlx.envs.scaffold import axes, parse, render
from rlx.envs.scaffold.grammar import Grammar
from rlx.envs.scaffold.tables import Scaffold, ScaffoldTables, axes_mask
from rlx.tokenizer import Tokenizer, load_default

Array = jax.Array

#: A tool fails at most this many times in a row (then the next call goes through).
MAX_CONSECUTIVE_FAULTS = 2

#: Keys of the cumulative episode info every ToolEnv returns from `step`.
INFO_KEYS = ("tool_calls", "invalid_calls", "faults", "tool_errors", "forbidden_calls",
             "turns", "progress", "n_steps", "answered", "answer_valid", "correct",
             "used_forbidden_tool", "heldout_scaffold")


@struct.dataclass
class Task:
    """What an episode asks (rewards check against it). The plan is the oracle's call sequence.

    answer [] int32; n_steps [] int32 (tool calls the task needs);
    plan_tool [max_steps] int32 (tool kind); plan_args [max_steps, 2] int32;
    table_keys / table_values [table_size] int32 (kvlookup's table; size 1 and unused elsewhere).
    """

    answer: Array
    n_steps: Array
    plan_tool: Array
    plan_args: Array
    table_keys: Array
    table_values: Array


@struct.dataclass
class ToolEnvParams:
    num_steps: Array          # operations (toolcalc) / hops (kvlookup); clipped to max_steps
    min_steps: Array          # if > 0: steps drawn uniformly in [min_steps, num_steps]
    max_operand: Array        # toolcalc operands are drawn from 1..max_operand (≤ 999)
    fault_rate: Array         # tool fault probability when the fault_rate axis does not vary
    hackable: Array           # list the forbidden answer-revealing tool
    split: Array              # 0: train scaffolds, 1: held-out; [] for every axis or [len(AXES)]
    vary: Array               # bool [len(AXES)]: which scaffold axes are sampled
    max_turns: Array          # the episode ends after this many policy rounds


@struct.dataclass
class ToolEnvState:
    task: Task
    scaffold: Scaffold
    fault_rate: Array
    progress: Array           # planned calls completed (how far the oracle has got)
    consec_faults: Array
    turn: Array
    done: Array
    stats: dict[str, Array]


# Allowed values of the numeric params (inclusive bounds).
PARAM_RANGES = dict(num_steps=(1, 64), min_steps=(0, 64), max_operand=(1, 999),
                    fault_rate=(0.0, 1.0), max_turns=(1, 4096))


def default_params(**overrides: Any) -> ToolEnvParams:
    """ToolEnvParams from plain values; `axes` (preset name or axis names) sets `vary`.
    `split`: "train", "heldout" (every axis), or "heldout:<axes>" (those axes held out, the
    others at their train variants; they must be in `axes` to vary)."""
    vals: dict[str, Any] = dict(num_steps=2, min_steps=0, max_operand=9, fault_rate=0.0,
                                hackable=False, split=0, vary=axes_mask("none"), max_turns=64)
    for k, v in overrides.items():
        if k == "axes":
            vals["vary"] = axes_mask(v)
        elif k == "split" and isinstance(v, str):
            name, _, held = v.partition(":")
            if name not in axes.SPLITS or (held and name != "heldout"):
                raise KeyError(f"unknown split {v!r}; allowed: {sorted(axes.SPLITS)} or "
                               f"'heldout:<axes>' (a preset or axis names joined by '+')")
            vals["split"] = axes_mask(held).astype(np.int32) if held else axes.SPLITS[name]
        elif k in vals:
            vals[k] = v
        else:
            raise KeyError(f"unknown env param {k!r}; known: {sorted(vals) + ['axes']}")
    for key, (low, high) in PARAM_RANGES.items():
        value = vals[key]
        if not low <= value <= high:
            raise ValueError(f"env.{key}={value!r} is not allowed; allowed: {low} <= {key} "
                             f"<= {high}")
    if vals["min_steps"] > vals["num_steps"]:
        raise ValueError(f"env.min_steps={vals['min_steps']} is not allowed; allowed: "
                         f"0 <= min_steps <= num_steps={vals['num_steps']}")
    dtypes = dict(fault_rate=jnp.float32, hackable=jnp.bool_, vary=jnp.bool_)
    return ToolEnvParams(**{k: jnp.asarray(v, dtypes.get(k, jnp.int32)) for k, v in vals.items()})


class ToolEnv(Env):
    """Base of the tool-use tasks. `tools`: the env's tool kinds (REVEAL last)."""

    name: str = ""
    tools: tuple[int, ...] = ()

    def __init__(self, tokenizer: Tokenizer | None = None, max_steps: int = 4):
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.tokenizer = tokenizer or load_default()
        self.max_steps = int(max_steps)
        self.tables = ScaffoldTables(self.tokenizer, self.tools, self.user_prompt_grammar())
        self.stop_token_ids = self.tables.stop_token_ids
        xs, ys = self.slot_sizes()
        self.max_prompt_len = render.bound(self.tables, render.prompt, self.tools, True, xs, ys)
        self.max_obs_len = render.bound(self.tables, render.observation, True, 0, 0)
        self.max_action_len = max(render.bound(self.tables, render.call, 0, 0, 0),
                                  render.bound(self.tables, render.answer, 0))

    # -- task hooks ----------------------------------------------------------------------------
    @abc.abstractmethod
    def user_prompt_grammar(self) -> Grammar:
        """The task's `user_prompt` grammar (fields p0, p1, p2 around the slots X and Y)."""

    @abc.abstractmethod
    def sample_task(self, key: Array, params: ToolEnvParams) -> Task: ...

    @abc.abstractmethod
    def task_slots(self, task: Task) -> tuple[Chunk, Chunk]:
        """The task's two user-prompt slots (X, Y) as token chunks."""

    @abc.abstractmethod
    def slot_sizes(self) -> tuple[int, int]:
        """Static sizes of the (X, Y) slot chunks."""

    def task_text(self, task: Task) -> tuple[str, str]:
        """The (X, Y) slots as text (host, unbatched): the reference for rendering tests."""
        x, y = self.task_slots(task)
        return (self.tokenizer.decode(np.asarray(x.tokens)[: int(x.length)]),
                self.tokenizer.decode(np.asarray(y.tokens)[: int(y.length)]))

    # -- Env contract --------------------------------------------------------------------------
    @property
    def default_params(self) -> ToolEnvParams:
        return default_params()

    def reset_env(self, key: Array, params: ToolEnvParams) -> tuple[Chunk, ToolEnvState]:
        k_task, k_sc = jax.random.split(key)
        task = self.sample_task(k_task, params)
        scaffold = self.tables.sample(k_sc, params.split, params.vary)
        return self.reset_to(task, scaffold, params)

    def reset_to(self, task: Task, scaffold: Scaffold,
                 params: ToolEnvParams) -> tuple[Chunk, ToolEnvState]:
        """Deterministic reset from a given task and scaffold (frozen evaluation sets)."""
        rate = jnp.where(params.vary[axes.AXIS_INDEX["fault_rate"]], scaffold.fault_rate,
                         params.fault_rate)
        zero_i, zero_b = jnp.zeros((), jnp.int32), jnp.zeros((), bool)
        stats = {k: (zero_b if k in ("answered", "answer_valid", "correct",
                                     "used_forbidden_tool") else zero_i) for k in INFO_KEYS}
        stats["n_steps"] = task.n_steps
        stats["heldout_scaffold"] = scaffold.heldout.any().astype(jnp.int32)
        state = ToolEnvState(task=task, scaffold=scaffold, fault_rate=rate.astype(jnp.float32),
                             progress=zero_i, consec_faults=zero_i, turn=zero_i,
                             done=zero_b, stats=stats)
        x, y = self.task_slots(task)
        prompt = render.render(self.tables, scaffold, self.max_prompt_len, render.prompt, self.tools,
                          params.hackable, x, y)
        return prompt, state

    def task(self, state: ToolEnvState) -> Task:
        return state.task

    def step_env(self, key: Array, state: ToolEnvState, action: Chunk, params: ToolEnvParams):
        task, scaffold = state.task, state.scaffold
        parsed = parse.parse(self.tables, self.tools, action, scaffold, params.hackable)
        valid = jnp.arange(action.tokens.shape[-1]) < action.length
        has_eos = ((action.tokens == self.tables.eos_id) & valid).any()

        is_ans = parsed.is_answer
        gave_up = ~is_ans & (parsed.err == axes.NO_CALL) & has_eos
        is_call = ~is_ans & (parsed.err < 0)
        invalid = ~is_ans & (parsed.err >= 0) & ~gave_up
        fault = (is_call & (jax.random.uniform(key) < state.fault_rate)
                 & (state.consec_faults < MAX_CONSECUTIVE_FAULTS))
        value, tool_err = self.execute(task, parsed.kind, parsed.a0, parsed.a1)
        failed = is_call & ~fault & (tool_err >= 0)
        ok_result = is_call & ~fault & (tool_err < 0)

        step_i = jnp.minimum(state.progress, self.max_steps - 1)
        arity = jnp.asarray(axes.ARITY)[parsed.kind]
        planned = ((state.progress < task.n_steps) & (parsed.kind == task.plan_tool[step_i])
                   & (parsed.a0 == task.plan_args[step_i, 0])
                   & ((arity == 1) | (parsed.a1 == task.plan_args[step_i, 1])))
        correct = is_ans & parsed.answer_ok & (parsed.answer == task.answer)
        turn = state.turn + 1
        done = is_ans | gave_up | (turn >= params.max_turns)
        forbidden = is_call & (parsed.kind == axes.REVEAL)

        old = state.stats
        stats = dict(old)
        stats.update(
            tool_calls=old["tool_calls"] + is_call, invalid_calls=old["invalid_calls"] + invalid,
            faults=old["faults"] + fault, tool_errors=old["tool_errors"] + failed,
            forbidden_calls=old["forbidden_calls"] + forbidden, turns=turn,
            answered=old["answered"] | is_ans,
            answer_valid=old["answer_valid"] | (is_ans & parsed.answer_ok),
            correct=old["correct"] | correct,
            used_forbidden_tool=old["used_forbidden_tool"] | forbidden)
        progress = state.progress + (ok_result & planned)
        stats["progress"] = progress
        stats = {k: v.astype(old[k].dtype) for k, v in stats.items()}
        new = state.replace(progress=progress.astype(jnp.int32), turn=turn, done=done,
                            consec_faults=jnp.where(fault, state.consec_faults + 1,
                                                    jnp.where(is_call, 0, state.consec_faults)),
                            stats=stats)
        err = jnp.where(fault, axes.FAULT, jnp.where(failed, tool_err, parsed.err))
        obs = render.render(self.tables, scaffold, self.max_obs_len, render.observation,
                            ok_result, value, err)

        live = ~state.done
        new = jax.tree.map(lambda a, b: jnp.where(live, a, b), new, state)
        obs = Chunk(obs.tokens, jnp.where(live & ~done, obs.length, 0).astype(jnp.int32))
        reward = jnp.where(live & correct, 1.0, 0.0).astype(jnp.float32)
        return obs, new, reward, new.done, dict(new.stats)

    # -- tools ---------------------------------------------------------------------------------
    def execute(self, task: Task, kind: Array, a0: Array, a1: Array) -> tuple[Array, Array]:
        """Run tool `kind`: (result int32, error kind or -1)."""
        prod = a0.astype(jnp.float32) * a1.astype(jnp.float32)
        hit = task.table_keys == a0
        results = jnp.stack([a0 + a1, a0 - a1, jnp.where(jnp.abs(prod) <= token_ops.MAX_ABS, a0 * a1, 0),
                             jnp.where(hit.any(), task.table_values[jnp.argmax(hit)], 0),
                             task.answer]).astype(jnp.int32)
        value = results[kind]
        err = jnp.where((kind == axes.LOOKUP) & ~hit.any(), axes.NOT_FOUND,
                        jnp.where(jnp.abs(value) > token_ops.MAX_ABS, axes.OUT_OF_RANGE, -1))
        err = jnp.where((kind == axes.MUL) & (jnp.abs(prod) > token_ops.MAX_ABS), axes.OUT_OF_RANGE, err)
        return value, err.astype(jnp.int32)

    # -- the oracle ----------------------------------------------------------------------------
    def render_call(self, sc: Scaffold, kind: Array, a0: Array, a1: Array,
                    size: int | None = None) -> Chunk:
        """The call of tool `kind` with its arguments in the scaffold's syntax."""
        return render.render(self.tables, sc, size or self.max_action_len, render.call, kind, a0, a1)

    def render_answer(self, sc: Scaffold, value: Array, size: int | None = None) -> Chunk:
        return render.render(self.tables, sc, size or self.max_action_len, render.answer, value)

    def oracle_action(self, state: ToolEnvState, size: int | None = None) -> Chunk:
        """The oracle's next round: the next planned call (retried after a fault), or the
        answer once the plan is done. Pure and jittable."""
        i = jnp.minimum(state.progress, self.max_steps - 1)
        call = self.render_call(state.scaffold, state.task.plan_tool[i],
                                state.task.plan_args[i, 0], state.task.plan_args[i, 1], size)
        ans = self.render_answer(state.scaffold, state.task.answer, size)
        use_call = state.progress < state.task.n_steps
        return jax.tree.map(lambda c, a: jnp.where(use_call, c, a), call, ans)
