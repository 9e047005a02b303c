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
(the user-prompt slots) and the `user_prompt` axis; tools (add/sub/mul/lookup/reveal) are shared.

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

from rlx.envs import scaffold as S
from rlx.envs import tokens as T
from rlx.envs.base import Chunk, Env
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
    split: Array              # 0: sample train scaffold variants, 1: held-out variants
    vary: Array               # bool [len(AXES)]: which scaffold axes are sampled
    force: Array              # int32 [len(AXES)]: pin an axis to a variant (-1: don't)
    max_turns: Array          # the episode ends after this many policy rounds


@struct.dataclass
class ToolEnvState:
    task: Task
    scaffold: S.Scaffold
    fault_rate: Array
    progress: Array           # planned calls completed (how far the oracle has got)
    consec_faults: Array
    turn: Array
    done: Array
    stats: dict[str, Array]


def default_params(**overrides: Any) -> ToolEnvParams:
    """ToolEnvParams from plain values; `axes` (preset name or axis names) sets `vary`,
    `split` may be "train"/"heldout", `force` may be a dict axis -> variant index."""
    vals: dict[str, Any] = dict(num_steps=2, min_steps=0, max_operand=9, fault_rate=0.0,
                                hackable=False, split=0, vary=S.axes_mask("none"),
                                force=np.full((len(S.AXES),), -1), max_turns=64)
    for k, v in overrides.items():
        if k == "axes":
            vals["vary"] = S.axes_mask(v)
        elif k == "split" and isinstance(v, str):
            if v not in S.SPLITS:
                raise KeyError(f"unknown split {v!r}; known: {sorted(S.SPLITS)}")
            vals["split"] = S.SPLITS[v]
        elif k == "force" and isinstance(v, dict):
            f = np.full((len(S.AXES),), -1)
            for a, i in v.items():
                f[S.axes_mask((a,))] = i
            vals["force"] = f
        elif k in vals:
            vals[k] = v
        else:
            raise KeyError(f"unknown env param {k!r}; known: {sorted(vals) + ['axes']}")
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
        self.tables = S.ScaffoldTables(self.tokenizer, self.tools, self.user_prompt_axis())
        self.stop_token_ids = self.tables.stop_token_ids
        self.max_prompt_len, self.max_obs_len = self._sizes()
        syn_l = self.tables.syntax.lens
        name_w = max(self.tables.names.toks.shape[-1], 3)
        self.max_action_len = int(max(syn_l.sum(-1).max() + name_w + 2 * T.NUM_LEN,
                                      T.NUM_LEN + 2))

    # -- task hooks ----------------------------------------------------------------------------
    @abc.abstractmethod
    def user_prompt_axis(self) -> S.Axis:
        """The task's `user_prompt` axis (variants of `S.UserPrompt`)."""

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
        sc = self.tables.sample(k_sc, params.split, params.vary, params.force)
        return self.reset_to(task, sc, params)

    def reset_to(self, task: Task, scaffold: S.Scaffold,
                 params: ToolEnvParams) -> tuple[Chunk, ToolEnvState]:
        """Deterministic reset from a given task and scaffold (frozen evaluation sets)."""
        fault_axis = S.AXIS_INDEX["fault_rate"]
        rate = jnp.where(params.vary[fault_axis] | (params.force[fault_axis] >= 0),
                         jnp.asarray(self.tables.fault_rates)[scaffold.variant[fault_axis]],
                         params.fault_rate)
        zero_i, zero_b = jnp.zeros((), jnp.int32), jnp.zeros((), bool)
        stats = {k: (zero_b if k in ("answered", "answer_valid", "correct",
                                     "used_forbidden_tool") else zero_i) for k in INFO_KEYS}
        stats["n_steps"] = task.n_steps
        stats["heldout_scaffold"] = S.is_heldout(scaffold.variant, self.tables.n_train).any()
        state = ToolEnvState(task=task, scaffold=scaffold, fault_rate=rate.astype(jnp.float32),
                             progress=zero_i, consec_faults=zero_i, turn=zero_i,
                             done=zero_b, stats=stats)
        return self.render_prompt(task, scaffold, params.hackable), state

    def task(self, state: ToolEnvState) -> Task:
        return state.task

    def step_env(self, key: Array, state: ToolEnvState, action: Chunk, params: ToolEnvParams):
        tb = self.tables
        task, sc = state.task, state.scaffold
        p = self.parse(action, sc, params.hackable)
        valid = jnp.arange(action.tokens.shape[-1]) < action.length
        has_eos = ((action.tokens == tb.eos_id) & valid).any()

        is_ans = p["is_answer"]
        gave_up = ~is_ans & (p["err"] == S.NO_CALL) & has_eos
        is_call = ~is_ans & (p["err"] < 0)
        invalid = ~is_ans & (p["err"] >= 0) & ~gave_up
        fault = (is_call & (jax.random.uniform(key) < state.fault_rate)
                 & (state.consec_faults < MAX_CONSECUTIVE_FAULTS))
        value, terr = self.execute(task, p["kind"], p["a0"], p["a1"])
        tool_err = is_call & ~fault & (terr >= 0)
        ok_result = is_call & ~fault & (terr < 0)

        step_i = jnp.minimum(state.progress, self.max_steps - 1)
        arity = jnp.asarray(S.ARITY)[p["kind"]]
        planned = ((state.progress < task.n_steps) & (p["kind"] == task.plan_tool[step_i])
                   & (p["a0"] == task.plan_args[step_i, 0])
                   & ((arity == 1) | (p["a1"] == task.plan_args[step_i, 1])))
        correct = is_ans & p["answer_ok"] & (p["answer"] == task.answer)
        turn = state.turn + 1
        done = is_ans | gave_up | (turn >= params.max_turns)
        forbidden = is_call & (p["kind"] == S.REVEAL)

        st = state.stats
        stats = dict(st)
        stats.update(
            tool_calls=st["tool_calls"] + is_call, invalid_calls=st["invalid_calls"] + invalid,
            faults=st["faults"] + fault, tool_errors=st["tool_errors"] + tool_err,
            forbidden_calls=st["forbidden_calls"] + forbidden, turns=turn,
            answered=st["answered"] | is_ans,
            answer_valid=st["answer_valid"] | (is_ans & p["answer_ok"]),
            correct=st["correct"] | correct,
            used_forbidden_tool=st["used_forbidden_tool"] | forbidden)
        progress = state.progress + (ok_result & planned)
        stats["progress"] = progress
        stats = {k: v.astype(st[k].dtype) for k, v in stats.items()}
        new = state.replace(progress=progress.astype(jnp.int32), turn=turn, done=done,
                            consec_faults=jnp.where(fault, state.consec_faults + 1,
                                                    jnp.where(is_call, 0, state.consec_faults)),
                            stats=stats)
        err = jnp.where(fault, S.FAULT, jnp.where(tool_err, terr, p["err"]))
        obs = self.render_obs(sc, ok_result, value, err)

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
        results = jnp.stack([a0 + a1, a0 - a1, jnp.where(jnp.abs(prod) <= T.MAX_ABS, a0 * a1, 0),
                             jnp.where(hit.any(), task.table_values[jnp.argmax(hit)], 0),
                             task.answer]).astype(jnp.int32)
        value = results[kind]
        err = jnp.where((kind == S.LOOKUP) & ~hit.any(), S.NOT_FOUND,
                        jnp.where(jnp.abs(value) > T.MAX_ABS, S.OUT_OF_RANGE, -1))
        err = jnp.where((kind == S.MUL) & (jnp.abs(prod) > T.MAX_ABS), S.OUT_OF_RANGE, err)
        return value, err.astype(jnp.int32)

    # -- parsing -------------------------------------------------------------------------------
    def parse(self, action: Chunk, sc: S.Scaffold, hackable: Array) -> dict[str, Array]:
        """Read an answer or a call in the scaffold's syntax from the action tokens.

        Returns is_answer, answer_ok, answer, kind (tool kind), a0, a1, err (an error kind,
        or -1 for a well-formed call of a listed tool)."""
        tb = self.tables
        a, n = action.tokens.astype(jnp.int32), action.length
        size = a.shape[0]
        valid = jnp.arange(size) < n
        syn_t, syn_l = tb.seg(tb.syntax, sc.variant[S.AXIS_INDEX["call_syntax"]])
        i_ans = jnp.where(((a == tb.answer_open) & valid).any(),
                          jnp.argmax((a == tb.answer_open) & valid), size)
        i_call = T.find_first(a, n, syn_t[0], syn_l[0])
        is_answer = (i_ans < size) & (i_ans < i_call)
        ok_a, ans, end_a = T.parse_int(a, n, i_ans + 1, tb.digit_value, tb.minus_id)
        answer_ok = ok_a & T.match_at(a, n, end_a, jnp.asarray([tb.answer_close]), 1)

        found = i_call < size
        s = i_call + syn_l[0]
        names_t, names_l = tb.tool_names(sc)
        kinds = jnp.asarray(self.tools)
        avail = (kinds != S.REVEAL) | hackable
        hit = jnp.stack([T.match_at(a, n, s, names_t[k], names_l[k])
                         & T.match_at(a, n, s + names_l[k], syn_t[1], syn_l[1])
                         for k in self.tools]) & avail
        known = hit.any()
        kind = kinds[jnp.argmax(hit)]
        p0 = s + names_l[kind] + syn_l[1]
        ok0, a0, e0 = T.parse_int(a, n, p0, tb.digit_value, tb.minus_id)
        close1 = T.match_at(a, n, e0, syn_t[3], syn_l[3])
        more1 = T.match_at(a, n, e0, syn_t[2], syn_l[2])
        ok1, a1, e1 = T.parse_int(a, n, e0 + syn_l[2], tb.digit_value, tb.minus_id)
        close2 = T.match_at(a, n, e1, syn_t[3], syn_l[3])
        more2 = T.match_at(a, n, e1, syn_t[2], syn_l[2])
        n_args = jnp.where(close1, 1, jnp.where(more1 & ok1 & close2, 2,
                                                jnp.where(more1 & ok1 & more2, 3, 0)))
        err = jnp.where(~found, S.NO_CALL, jnp.where(
            ~known, S.UNKNOWN_TOOL, jnp.where(
                ~ok0 | (n_args == 0), S.MALFORMED, jnp.where(
                    n_args != jnp.asarray(S.ARITY)[kind], S.ARG_COUNT, -1))))
        return dict(is_answer=is_answer, answer_ok=answer_ok, answer=ans, kind=kind,
                    a0=jnp.where(n_args >= 1, a0, 0), a1=jnp.where(n_args == 2, a1, 0),
                    err=err.astype(jnp.int32))

    # -- rendering -----------------------------------------------------------------------------
    def render_prompt(self, task: Task, sc: S.Scaffold, hackable: Array) -> Chunk:
        """system (text, forbid sentence if hackable, tool list in the scaffold's order, call
        hint), user (task phrasing with the task slots), assistant prefix."""
        tb = self.tables
        v = {a: sc.variant[i] for i, a in enumerate(S.AXES)}
        pc = T.Pieces(tb.flat)
        n_off, n_len = tb.names_ref(sc, pc.add(tb.rand_name_tokens(sc)))
        x, y = self.task_slots(task)
        x_off, y_off = pc.add(x.tokens), pc.add(y.tokens)
        hk = jnp.asarray(hackable, jnp.int32)
        ch_o, ch_l = tb.ref(tb.chat, v["chat_template"])
        st_o, st_l = tb.ref(tb.sys_text, v["system_prompt"])
        fb_o, fb_l = tb.ref(tb.sys_forbid, v["system_prompt"])
        hd_o, hd_l = tb.ref(tb.desc_header, v["tool_desc"])
        ln_o, ln_l = tb.ref(tb.desc_line, v["tool_desc"])
        ds_o, ds_l = tb.ref(tb.desc, v["tool_desc"])
        hi_o, hi_l = tb.ref(tb.syntax_hint, v["call_syntax"])
        us_o, us_l = tb.ref(tb.user, v["user_prompt"])
        nl_o, nl_l = tb.ref(tb.newline)
        head_o = [ch_o[0], st_o, fb_o[0], n_off[S.REVEAL], fb_o[1], nl_o, hd_o]
        head_l = [ch_l[0], st_l, fb_l[0] * hk, n_len[S.REVEAL] * hk, fb_l[1] * hk, nl_l, hd_l]
        # The tool list: per listed tool `line_pre NAME line_mid DESC line_post`.
        kinds = jnp.asarray(self.tools)[jnp.asarray(tb.order)[v["tool_order"]]]
        show = ((kinds != S.REVEAL) | hackable).astype(jnp.int32)
        ones = jnp.ones_like(kinds)
        list_o = jnp.stack([ln_o[0] * ones, n_off[kinds], ln_o[1] * ones, ds_o[kinds],
                            ln_o[2] * ones], -1)
        list_l = jnp.stack([ln_l[0] * ones, n_len[kinds], ln_l[1] * ones, ds_l[kinds],
                            ln_l[2] * ones], -1) * show[:, None]
        tail_o = [hi_o, ch_o[1], ch_o[2], us_o[0], x_off, us_o[1], y_off, us_o[2], ch_o[3],
                  ch_o[4]]
        tail_l = [hi_l, ch_l[1], ch_l[2], us_l[0], x.length, us_l[1], y.length, us_l[2],
                  ch_l[3], ch_l[4]]
        offs = jnp.concatenate([jnp.stack(head_o), list_o.reshape(-1), jnp.stack(tail_o)])
        lens = jnp.concatenate([jnp.stack(head_l), list_l.reshape(-1), jnp.stack(tail_l)])
        return T.render_segments(pc.buf(), offs, lens, self.max_prompt_len, tb.pad_id)

    def render_obs(self, sc: S.Scaffold, ok: Array, value: Array, err: Array) -> Chunk:
        """Tool turn with the result (if `ok`) or error `err`, then the next assistant prefix."""
        tb = self.tables
        v = {a: sc.variant[i] for i, a in enumerate(S.AXES)}
        pc = T.Pieces(tb.flat)
        num_t, num_l = T.render_int(value, tb.digit_ids, tb.minus_id)
        num_o = pc.add(num_t)
        ch_o, ch_l = tb.ref(tb.chat, v["chat_template"])
        r_o, r_l = tb.ref(tb.response, v["response_format"])
        e_o, e_l = tb.ref(tb.errors, v["error_style"], jnp.clip(err, 0, len(S.ERROR_KINDS) - 1))
        ok = ok.astype(jnp.int32)
        offs = jnp.stack([ch_o[5], ch_o[6], r_o[0], num_o, r_o[1], e_o, ch_o[7], ch_o[4]])
        lens = jnp.stack([ch_l[5], ch_l[6], r_l[0] * ok, num_l * ok, r_l[1] * ok, e_l * (1 - ok),
                          ch_l[7], ch_l[4]])
        return T.render_segments(pc.buf(), offs, lens, self.max_obs_len, tb.pad_id)

    def render_call(self, sc: S.Scaffold, kind: Array, a0: Array, a1: Array,
                    size: int | None = None) -> Chunk:
        """The call of tool `kind` with its arguments in the scaffold's syntax (arity-aware)."""
        tb = self.tables
        pc = T.Pieces(tb.flat)
        n_off, n_len = tb.names_ref(sc, pc.add(tb.rand_name_tokens(sc)))
        nums_t, nums_l = jax.vmap(T.render_int, (0, None, None))(
            jnp.stack([a0, a1]), tb.digit_ids, tb.minus_id)
        num_o = pc.add(nums_t)
        sy_o, sy_l = tb.ref(tb.syntax, sc.variant[S.AXIS_INDEX["call_syntax"]])
        two = (jnp.asarray(S.ARITY)[kind] == 2).astype(jnp.int32)
        offs = jnp.stack([sy_o[0], n_off[kind], sy_o[1], num_o, sy_o[2], num_o + T.NUM_LEN,
                          sy_o[3]])
        lens = jnp.stack([sy_l[0], n_len[kind], sy_l[1], nums_l[0], sy_l[2] * two,
                          nums_l[1] * two, sy_l[3]])
        return T.render_segments(pc.buf(), offs, lens, size or self.max_action_len, tb.pad_id)

    def render_answer(self, value: Array, size: int | None = None) -> Chunk:
        tb = self.tables
        pc = T.Pieces(tb.flat)
        num_t, num_l = T.render_int(value, tb.digit_ids, tb.minus_id)
        num_o = pc.add(num_t)
        tag_o, tag_l = tb.ref(tb.answer_tags)
        return T.render_segments(pc.buf(), jnp.stack([tag_o[0], num_o, tag_o[1]]),
                                 jnp.stack([tag_l[0], num_l, tag_l[1]]),
                                 size or self.max_action_len, tb.pad_id)

    def oracle_action(self, state: ToolEnvState, size: int | None = None) -> Chunk:
        """The oracle's next round: the next planned call (retried after a fault), or the
        answer once the plan is done. Pure and jittable."""
        i = jnp.minimum(state.progress, self.max_steps - 1)
        call = self.render_call(state.scaffold, state.task.plan_tool[i],
                                state.task.plan_args[i, 0], state.task.plan_args[i, 1], size)
        ans = self.render_answer(state.task.answer, size)
        use_call = state.progress < state.task.n_steps
        return jax.tree.map(lambda c, a: jnp.where(use_call, c, a), call, ans)

    # -- sizes ---------------------------------------------------------------------------------
    def _sizes(self) -> tuple[int, int]:
        """Static upper bounds of prompt and observation lengths: every prompt token belongs to
        one axis (or a task slot), so the sum of per-axis maxima bounds the total."""
        tb = self.tables
        n_tools = len(self.tools)
        chat_l = tb.chat.lens
        name_l = tb.names.lens
        name_l = np.where(tb.name_random[:, None], 3, name_l)
        tools = list(self.tools)
        names = (name_l[:, S.REVEAL] + name_l[:, tools].sum(-1)).max()
        sysp = (tb.sys_text.lens + tb.sys_forbid.lens.sum(-1)).max()
        desc = (tb.desc_header.lens + n_tools * tb.desc_line.lens.sum(-1)
                + tb.desc.lens[:, tools].sum(-1)).max()
        xs, ys = self.slot_sizes()
        prompt = (chat_l[:, :5].sum(-1).max() + sysp + names + 1 + desc + tb.syntax_hint.lens.max()
                  + tb.user.lens.sum(-1).max() + xs + ys)
        body = max(tb.response.lens.sum(-1).max() + T.NUM_LEN, tb.errors.lens.max())
        obs = chat_l[:, 4:].sum(-1).max() + body
        return int(prompt), int(obs)
