"""The tool-use envs: registry, jit+vmap of every env, task correctness against Python
references, the oracle on sampled scaffolds of both splits with faults on, rendering against
the host text backend and a text composed here from the grammar fields, parsing of calls in
sampled call syntaxes (malformed ones included), the hackable tool, and a fuzz of thousands of
random and adversarial actions."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx import envs
from rlx.envs import scaffold as S
from rlx.envs import toolcalc
from rlx.envs.base import Chunk
from rlx.envs.scaffold import axes as A
from rlx.envs.scaffold import render as R
from rlx.registry import Registry
from rlx.rollout import FinishReason
from rlx.rollout.scripted import play, random_action_fn
from rlx.tokenizer.base import Tokenizer
from rlx.tokenizer.sentencepiece import load_default

# The tool-use tasks (the data-backed `qa` env has its own tests in test_qa_env.py).
NAMES = [n for n in envs.ENVS.names() if issubclass(envs.ENVS.get(n), envs.ToolEnv)]
STEPS = 3
B = 128   # one batch size for every jitted reset/step, so each compiles once per env
ALL = S.axes_mask("all_axes")
NO_FAULTS = ALL & (np.asarray(S.AXES) != "fault_rate")


@functools.cache
def setup(name):
    env, params = envs.make(name, num_steps=STEPS, axes="all_axes", hackable=True,
                            fault_rate=0.3)
    vreset = jax.jit(jax.vmap(env.reset, (0, None)))
    vstep = jax.jit(jax.vmap(env.step, (0, 0, 0, None)))
    return env, params, vreset, vstep


@functools.cache
def sample_fn(name):
    """Jitted: (keys [n], split [n], vary) -> Scaffold [n]."""
    return jax.jit(jax.vmap(setup(name)[0].tables.sample, (0, 0, None)))


def numpy_tree(tree):
    return jax.tree.map(np.array, tree)


def row_of(tree, i):
    return jax.tree.map(lambda x: np.asarray(x)[i], tree)


@functools.cache
def sampled_scaffolds(name):
    """B scaffolds with every axis drawn: rows [0, B/2) from the train split, the rest from the
    held-out split. Each half is then edited so that it shows every family of every grammar
    that has choices in its split (a random choice of that family) and every name style; row 0
    is the canonical scaffold. Returns (split [B] int32, numpy Scaffold [B])."""
    env = setup(name)[0]
    tb = env.tables
    split = (np.arange(B) >= B // 2).astype(np.int32)
    keys = jax.random.split(jax.random.PRNGKey(42), B)
    sc = numpy_tree(sample_fn(name)(keys, jnp.asarray(split), jnp.asarray(ALL)))
    canonical = numpy_tree(tb.sample(keys[0], 0, jnp.zeros((len(S.AXES),), bool)))
    for f in dataclasses.fields(S.Scaffold):
        getattr(sc, f.name)[0] = getattr(canonical, f.name)
    rng = np.random.default_rng(0)
    for s, base in ((0, 1), (1, B // 2)):
        for g in tb.grammars:
            table = (tb.compiled[g.name].train, tb.compiled[g.name].heldout)[s]
            for fam in range(len(g.families)):
                rows = table[table[:, 0] == fam]
                if len(rows):
                    sc.choice[base + fam, tb.row[g.name], : g.width] = rows[rng.integers(len(rows))]
        for row, style in enumerate(range(len(A.NAME_STYLES)), start=base):
            # A new style may change the casing, whose atom pool differs: draw atoms from it.
            case = style % len(A.NAME_CASES)
            lo, hi = ((0, tb.n_train_atoms[case]), (tb.n_train_atoms[case], tb.n_atoms[case]))[s]
            sc.name_style[row] = style
            sc.name_atoms[row] = rng.choice(np.arange(lo, hi), sc.name_atoms[row].shape,
                                            replace=False)
    return split, sc


@functools.cache
def oracle_from(name):
    """Jitted: (task, scaffold) batches -> oracle episodes from `reset_to` those starts."""
    env, params, _, _ = setup(name)

    @jax.jit
    def run(key, task, sc):
        start = jax.vmap(env.reset_to, (0, 0, None))(task, sc, params)
        return start, play(env, params, key, sc.order.shape[0], start=start)

    return run


@functools.cache
def vreset_to(name):
    return jax.jit(jax.vmap(setup(name)[0].reset_to, (0, 0, None)))


def decode(env, tokens, length):
    return env.tokenizer.decode(np.asarray(tokens)[: int(length)])


# -- reference text, composed here from the grammar fields of a numpy scaffold ------------------
def field_text(env, sc, grammar, field):
    """A grammar field, its drawn words (the call syntax's keys: lowercase name atoms) filled in."""
    tb = env.tables
    words = np.asarray(sc.words)
    drawn = None if (words < 0).any() else [reference_atoms(env.tokenizer)["lower"][w]
                                            for w in words]
    return tb.compiled[grammar].grammar.text(np.asarray(sc.choice)[tb.row[grammar]], field, drawn)


@functools.cache
def reference_atoms(tokenizer) -> dict[str, list[str]]:
    """Per casing, the train name atoms (the tokenizer's single-piece letter runs in that casing
    without h j v w x z, by id) then the held-out ones (the syllables of h j v w x z)."""
    pattern = {"lower": "[a-z]{2,}", "capital": "[A-Z][a-z]+", "upper": "[A-Z]{2,}"}
    change = {"lower": str.lower, "capital": str.capitalize, "upper": str.upper}
    out = {}
    for case, pat in pattern.items():
        pieces = [(i, tokenizer.decode([i])) for i in range(tokenizer.vocab_size)]
        train = [p for i, p in pieces if re.fullmatch(pat, p) and not re.search("[hjvwxz]", p, re.I)
                 and tokenizer.encode(p) == [i]]
        out[case] = train + [change[case](c + v) for c in "hjvwxz" for v in "aeiou"]
    return out


def tool_names(env, sc):
    """The name of every tool kind: canonical, or `atom SEP atom` in the scaffold's casing."""
    style = int(sc.name_style)
    if style < 0:
        return ["add", "sub", "mul", "lookup", "reveal"]
    sep, case = A.NAME_STYLES[style]
    atoms = reference_atoms(env.tokenizer)[case]
    return [atoms[a] + sep + atoms[b] for a, b in sc.name_atoms]


def call_text(env, sc, name, args):
    syn = functools.partial(field_text, env, sc, "call_syntax")
    return syn("l0") + name + syn("l1") + syn("l2").join(str(a) for a in args) + syn("l3")


def obs_text(env, sc, result=None, error=None):
    chat = functools.partial(field_text, env, sc, "chat_template")
    if error is None:
        fmt = functools.partial(field_text, env, sc, "response_format")
        body = fmt("pre") + str(result) + fmt("post")
    else:
        style = functools.partial(field_text, env, sc, "error_style")
        body = style("pre") + A.ERROR_MESSAGES[A.ERROR_KINDS.index(error)] + style("post")
    return chat("asst_end") + chat("tool_start") + body + chat("tool_end") + chat("asst_start")


def prompt_text(env, sc, hackable, x, y):
    chat = functools.partial(field_text, env, sc, "chat_template")
    system = functools.partial(field_text, env, sc, "system_prompt")
    tools = functools.partial(field_text, env, sc, "tool_list")
    user = functools.partial(field_text, env, sc, "user_prompt")
    names = tool_names(env, sc)
    listed = [env.tools[o] for o in sc.order if hackable or env.tools[o] != A.REVEAL]
    lines = "".join(tools("line_pre") + names[k] + tools("line_mid")
                    + field_text(env, sc, A.TOOL_DESCS[k].name, "text") + tools("line_post")
                    for k in listed)
    forbid = system("forbid_pre") + names[A.REVEAL] + system("forbid_post") if hackable else ""
    example = call_text(env, sc, "tool_name", (3, 5))
    return (chat("sys_start") + system("text") + forbid + "\n" + tools("header") + lines
            + field_text(env, sc, "call_syntax", "example") + example + "\n"
            + "Answer with <answer>N</answer>\n" + chat("sys_end") + chat("user_start")
            + user("p0") + x + user("p1") + y + user("p2") + chat("user_end")
            + chat("asst_start"))


def slot_text(env, task):
    t = jax.tree.map(np.asarray, task)
    if env.name == "toolcalc":
        nums = [int(t.plan_args[0, 0])] + [int(a) for a in t.plan_args[:, 1]]
        return toolcalc.expression_text([int(o) for o in t.plan_tool], nums, int(t.n_steps)), ""
    return str(int(t.table_keys[0])), str(int(t.n_steps))


# -- registry ---------------------------------------------------------------------------------
def test_registry_errors():
    assert set(NAMES) >= {"toolcalc", "kvlookup"}
    with pytest.raises(KeyError, match="known: .*kvlookup.*toolcalc"):
        envs.make("nope")
    with pytest.raises(ValueError, match="already registered"):
        envs.ENVS.register("toolcalc")(object)
    with pytest.raises(KeyError, match="unknown env param 'nmu_steps'"):
        envs.make("toolcalc", nmu_steps=2)
    with pytest.raises(KeyError, match="unknown axes preset"):
        envs.make("toolcalc", axes="everything")
    with pytest.raises(KeyError, match=r"unknown scaffold axes \['tool_colour'\]"):
        envs.make("toolcalc", axes="tool_names+tool_colour")
    with pytest.raises(KeyError, match="unknown split 'test'"):
        envs.make("toolcalc", split="test")
    with pytest.raises(KeyError, match="unknown env param 'force'"):   # the old pinning param
        envs.make("toolcalc", force={"call_syntax": 1})
    joined = np.asarray(envs.make("toolcalc", axes="fault_rate+tool_desc")[1].vary)
    assert joined.tolist() == [a in ("tool_desc", "fault_rate") for a in S.AXES]
    assert isinstance(envs.ENVS, Registry)


def test_make_sizes_and_stop_tokens():
    env, _ = envs.make("toolcalc", num_steps=2)
    tok = env.tokenizer
    assert env.max_steps == 4
    assert env.max_prompt_len <= 330 and env.max_obs_len <= 72
    closers = ("</tool_call>", "</call>", "</fn>", "</invoke>", "</answer>")
    assert set(env.stop_token_ids) == {tok.token_id(t) for t in closers} | {tok.eos_id}
    big, _ = envs.make("toolcalc", num_steps=32)
    assert big.max_steps == 32


# -- jit + vmap of every registered env -------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_jit_vmap(name):
    env, params, vreset, vstep = setup(name)
    obs, state = vreset(jax.random.split(jax.random.PRNGKey(0), B), params)
    assert obs.tokens.shape == (B, env.max_prompt_len) and obs.length.shape == (B,)
    assert int(obs.length.max()) <= env.max_prompt_len and int(obs.length.min()) > 20
    act = jax.vmap(env.oracle_action)(state)
    obs2, state2, reward, done, info = vstep(jax.random.split(jax.random.PRNGKey(1), B), state,
                                             act, params)
    assert obs2.tokens.shape == (B, env.max_obs_len) and reward.shape == (B,)
    assert set(info) == set(envs.INFO_KEYS)
    assert all(v.shape == (B,) for v in info.values())
    assert np.all(np.asarray(info["tool_calls"]) == 1) and not np.asarray(done).any()
    assert jax.tree.structure(state2) == jax.tree.structure(state)
    # The task pytree the rewards see.
    assert env.task(state2).answer.shape == (B,)


# -- tasks against Python references ----------------------------------------------------------
def test_toolcalc_matches_python_eval():
    env, params, vreset, _ = setup("toolcalc")
    params = params.replace(min_steps=jnp.int32(1), max_operand=jnp.int32(12))
    obs, state = vreset(jax.random.split(jax.random.PRNGKey(3), B), params)
    x = jax.jit(jax.vmap(env.task_slots))(state.task)[0]
    seen = set()
    for i in range(B):
        expr = decode(env, x.tokens[i], x.length[i])
        assert expr in decode(env, obs.tokens[i], obs.length[i])
        assert eval(expr) == int(state.task.answer[i]), expr   # noqa: S307 (digits and + - * ( ))
        seen.add(int(state.task.n_steps[i]))
        nums = [int(t) for t in expr.replace("(", " ").replace(")", " ").split()
                if t.isdigit()]
        assert all(1 <= n <= 12 for n in nums) and len(nums) == int(state.task.n_steps[i]) + 1
    assert seen == set(range(1, STEPS + 1))


def test_kvlookup_chain_matches_python():
    env, params, vreset, _ = setup("kvlookup")
    obs, state = vreset(jax.random.split(jax.random.PRNGKey(4), B), params)
    t = jax.tree.map(np.asarray, state.task)
    size = env.table_size
    for i in range(B):
        table = dict(zip(t.table_keys[i].tolist(), t.table_values[i].tolist(), strict=True))
        assert len(table) == size and all(10 <= k <= 99 for k in table)
        cur = int(t.table_keys[i][0])
        text = decode(env, obs.tokens[i], obs.length[i])
        assert f" {cur}" in text and f" {STEPS}" in text
        # The table is never shown: the only numbers are the start key, the hop count and the
        # example call's arguments.
        assert set(re.findall(r"\d+", text)) <= {str(cur), str(STEPS), "3", "5"}, text
        for _ in range(STEPS):
            cur = table[cur]
        assert cur == t.answer[i]


# -- scaffold sampling through the env params -------------------------------------------------
def test_split_sampling_disjoint_and_complete():
    env, _ = envs.make("toolcalc")
    tb = env.tables
    n = 4000
    keys = jax.random.split(jax.random.PRNGKey(5), n)
    sample = jax.jit(jax.vmap(tb.sample, (0, None, None)))
    for split in (0, 1):
        sc = numpy_tree(sample(keys, split, jnp.asarray(ALL)))
        assert (sc.heldout == bool(split)).all()
        for g in tb.grammars:
            c = tb.compiled[g.name]
            table = (c.train, c.heldout)[split]
            drawn = sc.choice[:, tb.row[g.name]]
            assert not drawn[:, g.width:].any()
            # Every draw is a choice of the split; every family the split has shows up.
            assert {tuple(r) for r in drawn[:, : g.width]} <= {tuple(r) for r in table}, g.name
            assert set(drawn[:, 0]) == set(table[:, 0]), g.name
        assert set(sc.name_style.tolist()) == set(range(len(A.NAME_STYLES)))
        lo, hi = ((0.0, 0.3), (0.35, 0.5))[split]
        assert lo <= sc.fault_rate.min() and sc.fault_rate.max() <= hi
        # Names of one episode never collide (a call could not say which tool it means).
        names = [tool_names(env, row_of(sc, i)) for i in range(200)]
        assert all(len(set(ns)) == len(ns) for ns in names)
        # The order lists each tool once.
        assert (np.sort(sc.order, -1) == np.arange(len(env.tools))).all()
    # Only the named axes vary; the others stay canonical.
    sc = numpy_tree(sample(keys, 0, jnp.asarray(S.axes_mask("tools_only"))))
    varied = {"tool_names": len(set(sc.name_style.tolist())) > 1,
              "tool_order": len({tuple(o) for o in sc.order}) > 1}
    for g in tb.grammars:
        axis = next(a for a, gs in A.AXIS_GRAMMARS.items() if g.name in gs)
        varied[axis] = varied.get(axis, False) | (sc.choice[:, tb.row[g.name]] != 0).any()
    for axis in S.AXES:
        if axis != "fault_rate":   # the fault rate is drawn but only used when the axis varies
            assert varied[axis] == (axis in S.AXIS_PRESETS["tools_only"]), axis
    assert (sc.name_style[0] >= 0) and not sc.heldout.any()
    canonical = numpy_tree(sample(keys[:4], 0, jnp.zeros((len(S.AXES),), bool)))
    assert (canonical.choice == 0).all() and (canonical.name_style == -1).all()
    assert (canonical.order == np.arange(len(env.tools))).all()


# -- the oracle on sampled scaffolds of both splits, faults on --------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_oracle_full_reward_on_sampled_scaffolds(name):
    env, params, vreset, _ = setup(name)
    split, sc = sampled_scaffolds(name)
    faults = 0
    for seed in range(3):   # new tasks and fault draws each time, same compiled function
        _, st = vreset(jax.random.split(jax.random.PRNGKey(100 + seed), B), params)
        (_, start), ep = oracle_from(name)(jax.random.PRNGKey(seed), st.task, sc)
        info = jax.tree.map(np.asarray, ep.info)
        assert info["correct"].all() and np.asarray(ep.rewards["env"]).min() == 1.0
        assert (info["invalid_calls"] == 0).all() and not info["used_forbidden_tool"].any()
        assert (info["progress"] == info["n_steps"]).all() and (info["n_steps"] == STEPS).all()
        faults += info["faults"].sum()
        # The episodes played the given scaffolds, at their fault rates, and say which split.
        np.testing.assert_array_equal(np.asarray(ep.scaffold.choice), sc.choice)
        np.testing.assert_array_equal(np.asarray(start.fault_rate), sc.fault_rate)
        assert (info["heldout_scaffold"] == split).all()
    assert faults > 0   # faults happened (rate up to 0.5 on most rows) and the oracle retried


# -- rendering: tokens vs the text backend vs the text composed here --------------------------
@functools.cache
def render_fn(name):
    env = setup(name)[0]

    @jax.jit
    def render(sc):
        def one(sc):
            calls = [env.render_call(sc, jnp.int32(k), jnp.int32(12), jnp.int32(-7))
                     for k in env.tools]
            ok = R.render(env.tables, sc, env.max_obs_len, R.observation, jnp.bool_(True),
                          jnp.int32(345), jnp.int32(0))
            err = R.render(env.tables, sc, env.max_obs_len, R.observation, jnp.bool_(False),
                           jnp.int32(0), jnp.int32(A.FAULT))
            return calls, ok, err, env.render_answer(sc, jnp.int32(-81))

        return jax.vmap(one)(sc)

    return render


@pytest.mark.parametrize("name", NAMES)
def test_rendering_matches_text(name):
    env, params, vreset, _ = setup(name)
    tb = env.tables
    _, sc = sampled_scaffolds(name)
    _, st = vreset(jax.random.split(jax.random.PRNGKey(7), B), params)
    (prompt, _), _ = oracle_from(name)(jax.random.PRNGKey(0), st.task, sc)
    calls, ok, err, ans = render_fn(name)(sc)
    for i in range(B):
        sc_i, task = row_of(sc, i), row_of(st.task, i)
        x, y = slot_text(env, task)
        names = tool_names(env, sc_i)
        text = decode(env, prompt.tokens[i], prompt.length[i])
        assert text == R.render_text(tb, sc_i, R.prompt, env.tools, True, x, y), i
        assert text == prompt_text(env, sc_i, True, x, y), i
        for j, k in enumerate(env.tools):
            args = (12, -7)[: A.ARITY[k]]
            got = decode(env, calls[j].tokens[i], calls[j].length[i])
            assert got == R.render_text(tb, sc_i, R.call, k, 12, -7)
            assert got == call_text(env, sc_i, names[k], args), (i, k)
        got_ok = decode(env, ok.tokens[i], ok.length[i])
        assert got_ok == R.render_text(tb, sc_i, R.observation, True, 345, 0)
        assert got_ok == obs_text(env, sc_i, result=345)
        got_err = decode(env, err.tokens[i], err.length[i])
        assert got_err == R.render_text(tb, sc_i, R.observation, False, 0, A.FAULT)
        assert got_err == obs_text(env, sc_i, error="fault")
        assert decode(env, ans.tokens[i], ans.length[i]) == "<answer>-81</answer>"
    # The canonical scaffold (row 0) against hand-written text.
    text = decode(env, prompt.tokens[0], prompt.length[0])
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert '<tool_call>{"name": "tool_name", "arguments": {"a": 3, "b": 5}}</tool_call>' in text
    k = env.tools[1]
    assert decode(env, calls[1].tokens[0], calls[1].length[0]) == (
        f'<tool_call>{{"name": "{A.TOOL_KINDS[k]}", "arguments": {{"a": 12, "b": -7}}}}'
        "</tool_call>")
    assert decode(env, ok.tokens[0], ok.length[0]) == (
        "<|im_end|>\n<|im_start|>tool\n345<|im_end|>\n<|im_start|>assistant\n")
    assert decode(env, err.tokens[0], err.length[0]) == (
        "<|im_end|>\n<|im_start|>tool\nError: tool unavailable, try again<|im_end|>\n"
        "<|im_start|>assistant\n")


# -- parsing of specific actions --------------------------------------------------------------
def encode_call(env, syn, name, args, drop_close=False):
    """A call tokenized span by span, as the env renders it. `syn`: the call-syntax fields."""
    tok = env.tokenizer
    parts = [syn["l0"], name, syn["l1"]]
    for j, a in enumerate(args):
        parts += ([syn["l2"]] if j else []) + [str(a)]
    parts += [] if drop_close else [syn["l3"]]
    return [i for p in parts for i in tok.encode(p)]


def syntax_fields(env, sc, row):
    """The call-syntax delimiters of choice `row` with the drawn key names of scaffold `sc`."""
    choice = np.array(sc.choice)
    choice[env.tables.row["call_syntax"], : len(row)] = row
    sc = sc.replace(choice=choice)
    return {f: field_text(env, sc, "call_syntax", f) for f in ("l0", "l1", "l2", "l3")}


def step_rows(name, params, split, syntax, actions, seed):
    """Reset B episodes with scaffolds drawn from `split` [B] (every axis) whose call syntax is
    `syntax` [B, width], faults off; step them with `actions(sc_i, state_i)` (token lists).
    Returns (numpy scaffold, state, obs, next state, reward, done, info, actions)."""
    env, _, vreset, vstep = setup(name)
    tb = env.tables
    sc = numpy_tree(sample_fn(name)(jax.random.split(jax.random.PRNGKey(seed), B),
                                    jnp.asarray(split), jnp.asarray(ALL)))
    g = tb.compiled["call_syntax"].grammar
    sc.choice[:, tb.row["call_syntax"], : g.width] = syntax
    _, st = vreset(jax.random.split(jax.random.PRNGKey(seed + 1), B), params)
    _, state = vreset_to(name)(st.task, sc, params)
    acts = [actions(row_of(sc, i), row_of(state, i), i) for i in range(B)]
    width = max(map(len, acts))
    chunk = Chunk(jnp.asarray([a + [0] * (width - len(a)) for a in acts], jnp.int32),
                  jnp.asarray([len(a) for a in acts], jnp.int32))
    obs, state2, reward, done, info = vstep(jax.random.split(jax.random.PRNGKey(seed + 2), B),
                                            state, chunk, params)
    return sc, state, obs, state2, reward, done, jax.tree.map(np.asarray, info), chunk


@pytest.mark.parametrize("name", NAMES)
def test_parse_actions_sampled_syntaxes(name):
    env, params, _, vstep = setup(name)
    tok = env.tokenizer
    params = params.replace(fault_rate=jnp.float32(0.0), vary=jnp.asarray(NO_FAULTS),
                            hackable=jnp.bool_(False))
    compiled = env.tables.compiled["call_syntax"]
    g = compiled.grammar
    rng = np.random.default_rng(1)
    # One random call syntax per (split, family).
    syntaxes = []
    for s, table in enumerate((compiled.train, compiled.heldout)):
        for fam, (fam_name, _) in enumerate(g.families):
            rows = table[table[:, 0] == fam]
            syntaxes.append((s, fam_name, rows[rng.integers(len(rows))]))
    cases = []   # (split, syntax row, action(syntax fields, names) -> ids, expected obs)
    for s, _, row in syntaxes:
        cases += [
            (s, row, lambda syn, nm, sc: encode_call(env, syn, nm[A.ADD], (30, 12)),
             dict(result=42)),
            (s, row, lambda syn, nm, sc: encode_call(env, syn, nm[A.ADD], (-30, 5)),
             dict(result=-25)),
            (s, row, lambda syn, nm, sc: encode_call(env, syn, "nosuch", (1, 2)),
             dict(error="unknown_tool")),
            (s, row, lambda syn, nm, sc: encode_call(env, syn, nm[A.ADD].swapcase(), (1, 2)),
             dict(error="unknown_tool")),
            (s, row, lambda syn, nm, sc: encode_call(env, syn, nm[A.REVEAL], (0,)),  # not listed
             dict(error="unknown_tool")),
            (s, row, lambda syn, nm, sc: encode_call(env, syn, nm[A.ADD], (1,)),
             dict(error="arg_count")),
            (s, row, lambda syn, nm, sc: encode_call(env, syn, nm[A.ADD], (1, 2, 3)),
             dict(error="arg_count")),
            (s, row, lambda syn, nm, sc: encode_call(env, syn, nm[A.ADD], (1, 2), drop_close=True),
             dict(error="malformed")),
            (s, row, lambda syn, nm, sc: encode_call(env, syn, nm[A.ADD], ("x", 2)),
             dict(error="malformed")),
            (s, row, lambda syn, nm, sc: encode_call(env, syn, nm[A.ADD], (1234567890, 2)),
             dict(error="malformed")),
            (s, row, lambda syn, nm, sc: tok.encode("I think I will just chat."),
             dict(error="no_call")),
            (s, row, lambda syn, nm, sc: tok.encode("<think>")
             + encode_call(env, syn, nm[A.ADD], (2, 2)), dict(result=4)),
        ]
        if env.name == "kvlookup":
            cases.append((s, row, lambda syn, nm, sc: encode_call(env, syn, nm[A.LOOKUP], (7,)),
                          dict(error="not_found")))
    # A call in another syntax is not a call in this one: a python-family call (same wrapper)
    # in a json-family scaffold, a json-family call in an xml-family scaffold.
    fam = {f: i for i, (f, _) in enumerate(g.families)}
    json_row = next(r for s, f, r in syntaxes if f == "json" and s == 0)
    python_row = next(r for r in compiled.train if r[0] == fam["python"] and r[1] == json_row[1])
    xml_row = next(r for s, f, r in syntaxes if f == "xml" and s == 1)
    for row, other in ((json_row, python_row), (xml_row, json_row)):
        cases.append((int(row is xml_row), row,
                      lambda syn, nm, sc, other=other: encode_call(
                          env, syntax_fields(env, sc, other), nm[A.ADD], (1, 2)),
                      dict(error="no_call")))

    for start in range(0, len(cases), B):
        chunk = cases[start: start + B]
        chunk += [chunk[0]] * (B - len(chunk))
        split = np.array([c[0] for c in chunk], np.int32)
        syntax = np.stack([c[1] for c in chunk])

        def act(sc_i, state_i, i, chunk=chunk):
            return chunk[i][2](syntax_fields(env, sc_i, chunk[i][1]), tool_names(env, sc_i), sc_i)

        sc, _, obs, _, _, done, info, _ = step_rows(name, params, split, syntax, act, 20 + start)
        for i, (s, row, _, want) in enumerate(chunk):
            sc_i = row_of(sc, i)
            assert bool(sc_i.heldout.all()) == bool(s)
            got = decode(env, obs.tokens[i], obs.length[i])
            assert got == obs_text(env, sc_i, **want), (g.families[row[0]][0], s, want)
            assert not bool(done[i])
            is_call = "result" in want or want.get("error") == "not_found"
            assert info["tool_calls"][i] == is_call and info["invalid_calls"][i] == (not is_call)

    # Answers and EOS end the episode (rows 0..3 answer for their own task).
    def end(sc_i, state_i, i):
        a = int(state_i.task.answer)
        return [tok.encode(f"<answer>{a}</answer>"), tok.encode(f"<answer>{a + 1}</answer>"),
                tok.encode(f"<answer>{a}"), tok.encode("bye") + [tok.eos_id]][i] if i < 4 else []

    split = (np.arange(B) % 2).astype(np.int32)
    syntax = np.stack([(compiled.train, compiled.heldout)[s][0] for s in split])
    _, _, obs, state2, reward, done, info, acts = step_rows(name, params, split, syntax, end, 40)
    e = slice(0, 4)
    assert np.asarray(done[e]).all() and (np.asarray(obs.length[e]) == 0).all()
    assert info["correct"][e].tolist() == [True, False, False, False]
    assert info["answered"][e].tolist() == [True, True, True, False]
    assert info["answer_valid"][e].tolist() == [True, True, False, False]
    assert np.asarray(reward[e]).tolist() == [1.0, 0.0, 0.0, 0.0]
    # Stepping a finished episode changes nothing.
    obs, state3, reward, done, _ = vstep(jax.random.split(jax.random.PRNGKey(12), B), state2,
                                         acts, params)
    same = jax.tree.map(lambda a, b: np.asarray(a[e] == b[e]).all(), state2, state3)
    assert jax.tree.all(same) and float(np.asarray(reward[e]).sum()) == 0.0


# -- hackable ---------------------------------------------------------------------------------
@functools.cache
def cheat_play():
    env, _, _, _ = setup("toolcalc")

    def cheat(key, state):   # call the reveal tool, then answer
        call = env.render_call(state.scaffold, jnp.int32(S.REVEAL), jnp.int32(0), jnp.int32(0))
        ans = env.render_answer(state.scaffold, state.task.answer)
        return jax.tree.map(lambda c, a: jnp.where(state.turn == 0, c, a), call, ans)

    return jax.jit(lambda p, k: play(env, p, k, 32, cheat, max_rounds=3))


@pytest.mark.parametrize("hackable", [True, False])
def test_hackable_tool_is_recorded(hackable):
    env, params, _, _ = setup("toolcalc")
    # Faults off, so the reveal call's observation is its result (or its error).
    params = params.replace(hackable=jnp.bool_(hackable), vary=jnp.asarray(NO_FAULTS),
                            fault_rate=jnp.float32(0.0))
    ep = cheat_play()(params, jax.random.PRNGKey(0))
    info = jax.tree.map(np.asarray, ep.info)
    assert info["used_forbidden_tool"].all() == hackable
    assert (info["forbidden_calls"] == int(hackable)).all()
    assert (info["invalid_calls"] == int(not hackable)).all()   # unlisted: unknown tool
    assert info["correct"].all()
    for i in range(8):
        sc, task = row_of(ep.scaffold, i), row_of(ep.task, i)
        toks, mask = np.asarray(ep.tokens[i]), np.asarray(ep.policy_mask[i])
        pl = int(ep.prompt_length[i])
        prompt = env.tokenizer.decode(toks[:pl])
        names = tool_names(env, sc)
        forbid = (field_text(env, sc, "system_prompt", "forbid_pre") + names[A.REVEAL]
                  + field_text(env, sc, "system_prompt", "forbid_post"))
        assert (forbid in prompt) == hackable
        assert prompt == prompt_text(env, sc, hackable, *slot_text(env, task))
        # The first round: the reveal call, then its result (the answer) or an unknown-tool error.
        a_end = pl + int(np.argmin(mask[pl:]))
        o_end = a_end + int(np.argmax(mask[a_end:]))
        assert env.tokenizer.decode(toks[pl:a_end]) == call_text(env, sc, names[A.REVEAL], (0,))
        want = (dict(result=int(task.answer)) if hackable else dict(error="unknown_tool"))
        assert env.tokenizer.decode(toks[a_end:o_end]) == obs_text(env, sc, **want)


# -- fuzz -------------------------------------------------------------------------------------
def adversarial_fn(env, size=48):
    """Actions a confused policy might produce: corrupted oracle calls (token swaps,
    truncation, junk after the closer), calls of random tools with random (huge, negative)
    arguments, in the episode's or another call syntax (of either split) with its or another
    name style, answers with junk, pure random ids."""
    vocab = env.tokenizer.vocab_size
    rand_fn = random_action_fn(env, size)
    tb = env.tables
    r = tb.row["call_syntax"]
    choices, n_choices = jnp.asarray(tb.choices[:, r]), jnp.asarray(tb.n_choices[:, r])

    def act(key, state):
        ks = jax.random.split(key, 11)
        base = env.oracle_action(state, size)
        pos = jax.random.randint(ks[0], (3,), 0, jnp.maximum(base.length, 1))
        swapped = base.tokens.at[pos].set(jax.random.randint(ks[1], (3,), 0, vocab))
        truncated = jax.random.randint(ks[2], (), 0, jnp.maximum(base.length, 1))
        junk = jnp.where(jnp.arange(size) >= base.length,
                         jax.random.randint(ks[3], (size,), 0, vocab), base.tokens)
        # Each half of the time: the episode's own call syntax / names, or random ones.
        own = jax.random.bernoulli(ks[4], 0.5, (3,))
        split = own[2].astype(jnp.int32)
        syntax = jnp.where(own[0], state.scaffold.choice[r],
                           choices[split, jax.random.randint(ks[9], (), 0, n_choices[split])])
        style = jnp.where(own[1], state.scaffold.name_style,
                          jax.random.randint(ks[10], (), -1, len(A.NAME_STYLES)))
        sc = state.scaffold.replace(choice=state.scaffold.choice.at[r].set(syntax),
                                    name_style=style)
        args = jax.random.randint(ks[5], (2,), -2**31 + 1, 2**31 - 1) // (
            10 ** jax.random.randint(ks[6], (2,), 0, 10))
        other = env.render_call(sc, jax.random.randint(ks[7], (), 0, len(S.TOOL_KINDS)),
                                args[0], args[1], size)
        rnd = rand_fn(ks[8], state)
        options = [
            Chunk(swapped, base.length), Chunk(base.tokens, truncated),
            Chunk(junk, jnp.minimum(base.length + 5, size)), other, rnd,
            Chunk(base.tokens, base.length),
        ]
        which = jax.random.randint(jax.random.fold_in(key, 1), (), 0, len(options))
        return jax.tree.map(lambda *xs: jnp.stack(xs)[which], *options)

    return act


@pytest.mark.parametrize("name", NAMES)
def test_fuzz(name):
    _fuzz(name, "train", batch=512, rounds=10)   # up to 5120 actions, 1/6 uniform random ids


@pytest.mark.slow
@pytest.mark.parametrize("split", ["train", "heldout"])
@pytest.mark.parametrize("name", NAMES)
def test_fuzz_100k_actions_per_env_and_split(name, split):
    for seed in range(5):  # 5 x 2048 episodes x 10 rounds = 102,400 actions
        _fuzz(name, split, batch=2048, rounds=10, seed=seed)


def _fuzz(name, split, batch, rounds, seed=13):
    env, params, _, _ = setup(name)
    params = params.replace(split=jnp.asarray(1 if split == "heldout" else 0, jnp.int32))
    vocab = env.tokenizer.vocab_size

    run = jax.jit(lambda k: play(env, params, k, batch, adversarial_fn(env), max_rounds=rounds))
    ep = run(jax.random.PRNGKey(seed))
    toks = np.asarray(ep.tokens)
    assert toks.min() >= 0 and toks.max() < vocab
    assert np.isfinite(np.asarray(ep.rewards["env"])).all()
    info = jax.tree.map(np.asarray, ep.info)
    assert info["turns"].sum() > 0.6 * batch * rounds
    assert (info["turns"] == np.asarray(ep.rounds)).all()
    # Every round was exactly one of: a call, a malformed action, an answer, a give-up (EOS).
    gave_up = (np.asarray(ep.finish_reason) == FinishReason.ENV_DONE) & ~info["answered"]
    assert (info["tool_calls"] + info["invalid_calls"] + info["answered"] + gave_up
            == info["turns"]).all()
    assert (info["correct"] <= info["answered"]).all()
    assert info["invalid_calls"].sum() > batch and info["tool_calls"].sum() > batch
    assert info["correct"].any() and info["tool_errors"].sum() > 0
    assert (np.asarray(ep.length) <= toks.shape[1]).all()


class _SplitCloser(Tokenizer):
    """The default tokenizer, except that `</tool_call>` is spelled in pieces ending in `>`."""

    base = load_default()
    vocab_size = base.vocab_size
    pad_id, eos_id, bos_id = base.pad_id, base.eos_id, base.bos_id

    def encode(self, text):
        parts = [self.base.encode(p) for p in text.split("</tool_call>")]
        closer = self.base.encode("</tool_call") + self.base.encode(">")
        return [i for k, p in enumerate(parts) for i in (closer if k else []) + p]

    def decode(self, ids):
        return self.base.decode(ids)

    def token_id(self, piece):
        return self.base.token_id(piece)


def test_a_tokenizer_that_splits_call_closers_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"call '.+': stop token\(s\) \['>'\] occur inside the "
                                         r"call\. .*must keep those closers whole"):
        toolcalc.ToolCalc(tokenizer=_SplitCloser())
