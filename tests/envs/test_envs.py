"""The tool-use envs: registry, jit+vmap of every env, task correctness against Python
references, the oracle on every scaffold variant with faults on, parsing of malformed actions,
the hackable tool, and a fuzz of thousands of random and adversarial actions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx import envs
from rlx.envs import scaffold as S
from rlx.envs import toolcalc
from rlx.envs.base import Chunk
from rlx.envs.play import play, random_action_fn
from rlx.registry import Registry
from rlx.tokenizer.base import Tokenizer
from rlx.tokenizer.sentencepiece import load_default

# The tool-use tasks (the data-backed `qa` env has its own tests in test_qa_env.py).
NAMES = [n for n in envs.ENVS.names() if issubclass(envs.ENVS.get(n), envs.ToolEnv)]
STEPS = 3
B = 128   # one batch size for every jitted reset/step, so each compiles once per env


@functools.cache
def setup(name):
    env, params = envs.make(name, num_steps=STEPS, axes="all_axes", hackable=True,
                            fault_rate=0.3)
    vreset = jax.jit(jax.vmap(env.reset, (0, None)))
    vstep = jax.jit(jax.vmap(env.step, (0, 0, 0, None)))
    return env, params, vreset, vstep


@functools.cache
def variant_rows(name):
    """One row per (axis, variant): that axis pinned to the variant, every other axis sampled
    from the variant's split. Returns ([(axis, variant)], Scaffold [n])."""
    env, params, _, _ = setup(name)
    tb = env.tables
    rows = [(ax, v) for a, ax in enumerate(S.AXES) for v in range(int(tb.n_total[a]))]
    force = np.full((len(rows), len(S.AXES)), -1, np.int32)
    split = np.zeros((len(rows),), np.int32)
    for i, (ax, v) in enumerate(rows):
        force[i, S.AXIS_INDEX[ax]] = v
        split[i] = v >= tb.n_train[S.AXIS_INDEX[ax]]
    keys = jax.random.split(jax.random.PRNGKey(42), len(rows))
    sc = jax.jit(jax.vmap(tb.sample, (0, 0, None, 0)))(keys, jnp.asarray(split),
                                                        jnp.asarray(S.axes_mask("all_axes")),
                                                        jnp.asarray(force))
    return rows, sc


@functools.cache
def oracle_from(name):
    """Jitted: (task, scaffold) batches -> oracle episodes from `reset_to` those starts."""
    env, params, _, _ = setup(name)

    @jax.jit
    def run(key, task, sc):
        start = jax.vmap(env.reset_to, (0, 0, None))(task, sc, params)
        return start, play(env, params, key, sc.variant.shape[0], start=start)

    return run


def decode(env, tokens, length):
    return env.tokenizer.decode(np.asarray(tokens)[: int(length)])


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
    joined = np.asarray(envs.make("toolcalc", axes="fault_rate+tool_desc")[1].vary)
    assert joined.tolist() == [a in ("tool_desc", "fault_rate") for a in S.AXES]
    assert isinstance(envs.ENVS, Registry)


def test_make_sizes_and_stop_tokens():
    env, _ = envs.make("toolcalc", num_steps=2)
    tok = env.tokenizer
    assert env.max_steps == 4
    assert env.max_prompt_len <= 240 and env.max_obs_len <= 48
    want = {tok.token_id(t) for t in ("</tool_call>", "</invoke>", "</answer>")} | {tok.eos_id}
    assert set(env.stop_token_ids) == want
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
        assert str(table[cur]) not in text.split("<|")[0][-40:]
        for _ in range(STEPS):
            cur = table[cur]
        assert cur == t.answer[i]


# -- scaffold sampling ------------------------------------------------------------------------
def test_split_sampling_disjoint_and_complete():
    env, _ = envs.make("toolcalc")
    tb = env.tables
    keys = jax.random.split(jax.random.PRNGKey(5), 4000)
    vary = jnp.asarray(S.axes_mask("all_axes"))
    force = -jnp.ones((len(S.AXES),), jnp.int32)
    sample = jax.jit(jax.vmap(tb.sample, (0, None, None, None)))
    for split in (0, 1):
        v = np.asarray(sample(keys, split, vary, force).variant)
        for a, name in enumerate(S.AXES):
            want = (set(range(tb.n_train[a])) if split == 0
                    else set(range(tb.n_train[a], tb.n_total[a])))
            assert set(v[:, a].tolist()) == want, (split, name)
    # Only the named axes vary; the others stay at the canonical variant 0.
    v = np.asarray(sample(keys, 0, jnp.asarray(S.axes_mask("tools_only")), force).variant)
    for a, name in enumerate(S.AXES):
        assert (len(set(v[:, a].tolist())) > 1) == (name in S.AXIS_PRESETS["tools_only"])
    for a, ax in enumerate(S.AXES):
        assert tb.n_train[a] >= 4 and tb.n_total[a] - tb.n_train[a] >= 2, ax


# -- the oracle on every variant, faults on ---------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_oracle_full_reward_every_variant(name):
    env, params, vreset, _ = setup(name)
    rows, sc = variant_rows(name)
    n = len(rows)
    faults = 0
    for seed in range(3):   # new tasks and fault draws each time, same compiled function
        _, st = vreset(jax.random.split(jax.random.PRNGKey(100 + seed), n), params)
        _, ep = oracle_from(name)(jax.random.PRNGKey(seed), st.task, sc)
        info = jax.tree.map(np.asarray, ep.info)
        assert info["correct"].all() and np.asarray(ep.reward).min() == 1.0
        assert (info["invalid_calls"] == 0).all() and not info["used_forbidden_tool"].any()
        assert (info["progress"] == info["n_steps"]).all() and (info["n_steps"] == STEPS).all()
        faults += info["faults"].sum()
        v = np.asarray(ep.scaffold.variant)
        for i, (ax, var) in enumerate(rows):
            a = S.AXIS_INDEX[ax]
            assert v[i, a] == var
            held = var >= env.tables.n_train[a]
            assert info["heldout_scaffold"][i] == held   # other axes follow the same split
    assert faults > 0   # faults happened (rate 0.1-0.5 on most rows) and the oracle retried


# -- rendering, per axis ----------------------------------------------------------------------
def slot_text(env, task):
    t = jax.tree.map(np.asarray, task)
    if env.name == "toolcalc":
        nums = [int(t.plan_args[0, 0])] + [int(a) for a in t.plan_args[:, 1]]
        return toolcalc.expression_text([int(o) for o in t.plan_tool], nums, int(t.n_steps)), ""
    return str(int(t.table_keys[0])), str(int(t.n_steps))


@pytest.mark.parametrize("name", NAMES)
def test_rendering_matches_variant_text(name):
    env, params, vreset, _ = setup(name)
    axes = env.tables.axes
    _, st = vreset(jax.random.split(jax.random.PRNGKey(7), 1), params)
    task = jax.tree.map(lambda x: x[0], st.task)
    x, y = slot_text(env, task)
    rows = []
    for a, ax in enumerate(S.AXES):
        for v in range(int(env.tables.n_total[a])):
            variant = np.zeros((len(S.AXES),), np.int32)
            variant[a] = v
            rows.append((ax, v, variant))
    variants = jnp.asarray(np.stack([r[2] for r in rows]))
    rand = jax.random.randint(jax.random.PRNGKey(8), (len(rows), len(S.TOOL_KINDS), 3), 0, 26)
    sc = S.Scaffold(variants, rand.at[:, :, 0].set(S.MASK_FIRST))
    tasks = jax.tree.map(lambda t: jnp.stack([t] * len(rows)), task)
    (prompt, state), _ = oracle_from(name)(jax.random.PRNGKey(0), tasks, sc)

    @jax.jit
    def render(sc):
        kind = jnp.full((len(rows),), env.tools[1])
        call = jax.vmap(env.render_call)(sc, kind, jnp.full_like(kind, 12), jnp.full_like(kind, -7))
        ok = jax.vmap(env.render_obs, (0, None, None, None))(sc, jnp.array(True), 345, 0)
        err = jax.vmap(env.render_obs, (0, None, None, None))(sc, jnp.array(False), 0, S.FAULT)
        return call, ok, err

    call, ok, err = render(sc)
    rate = state.fault_rate
    for i, (ax, v, variant) in enumerate(rows):
        letters = np.asarray(sc.rand_names[i])
        names = S.text_names(int(variant[S.AXIS_INDEX["tool_names"]]), letters)
        text = decode(env, prompt.tokens[i], prompt.length[i])
        assert text == S.prompt_text(axes, variant, env.tools, True, names, x, y), (ax, v)
        # The variant's own text is there (not just equal to a reference built the same way).
        val = axes[ax].variants[v]
        if ax == "tool_names":
            for k in env.tools:
                assert names[k] in text
            if isinstance(val, str):
                assert all(len(n) == 3 and n.isalpha() for n in names)
                assert all(n.isupper() == (val == S.RANDOM_UPPER) for n in names)
            else:
                assert [names[k] for k in range(len(S.TOOL_KINDS))] == list(val)
        elif ax == "tool_desc":
            assert val.header in text and all(val.desc[k] in text for k in env.tools)
        elif ax == "tool_order":
            d0 = axes["tool_desc"].variants[0]
            pos = [text.index(d0.line_pre + names[env.tools[j]] + d0.line_mid) for j in val]
            assert pos == sorted(pos)
        elif ax == "call_syntax":
            assert val.hint in text
        elif ax == "system_prompt":
            assert text.startswith(axes["chat_template"].variants[0].sys_start + val.text)
            assert val.forbid_pre + names[S.REVEAL] + val.forbid_post in text
        elif ax == "user_prompt":
            assert val.render(x, y) in text
        elif ax == "chat_template":
            assert text.startswith(val.sys_start) and text.endswith(val.asst_start)
            assert val.user_start in text
        # Calls, results and errors.
        kind = env.tools[1]
        want_call = S.call_text(axes, variant, names[kind], (12, -7)[: S.ARITY[kind]])
        assert decode(env, call.tokens[i], call.length[i]) == want_call
        assert decode(env, ok.tokens[i], ok.length[i]) == S.obs_text(axes, variant, result=345)
        assert decode(env, err.tokens[i], err.length[i]) == S.obs_text(axes, variant,
                                                                        error="fault")
        if ax == "response_format":
            assert f"{val[0]}345{val[1]}" in decode(env, ok.tokens[i], ok.length[i])
        if ax == "error_style":
            assert decode(env, err.tokens[i], err.length[i]).count(val[0] + "tool unavailable")
        if ax == "fault_rate":
            assert float(rate[i]) == pytest.approx(val)


# -- parsing of specific actions --------------------------------------------------------------
def encode_call(env, syntax, name, args, drop_close=False):
    """A call tokenized span by span, as the env renders it (see the report on tokenization)."""
    tok = env.tokenizer
    parts = [syntax.l0, name, syntax.l1]
    for j, a in enumerate(args):
        parts += ([syntax.l2] if j else []) + [str(a)]
    parts += [] if drop_close else [syntax.l3]
    return [i for p in parts for i in tok.encode(p)]


@pytest.mark.parametrize("name", NAMES)
def test_parse_actions_every_syntax(name):
    env, params, vreset, vstep = setup(name)
    tok = env.tokenizer
    params = params.replace(fault_rate=jnp.float32(0.0), vary=jnp.zeros_like(params.vary),
                            hackable=jnp.bool_(False))
    syntaxes = S.CALL_SYNTAX.variants
    names = list(S.TOOL_NAMES.variants[0])
    add, first = names[S.ADD], names[env.tools[0]]
    cases = []   # (syntax index, token ids, expected obs text or None if done, correct)
    for si, syn in enumerate(syntaxes):
        cases += [
            (si, encode_call(env, syn, add, (30, 12)), dict(result=42)),
            (si, encode_call(env, syn, add, (-30, 5)), dict(result=-25)),
            (si, encode_call(env, syn, "nosuch", (1, 2)), dict(error="unknown_tool")),
            (si, encode_call(env, syn, add, (1,)), dict(error="arg_count")),
            (si, encode_call(env, syn, add, (1, 2, 3)), dict(error="arg_count")),
            (si, encode_call(env, syn, add, (1, 2), drop_close=True), dict(error="malformed")),
            (si, encode_call(env, syn, add, ("x", 2)), dict(error="malformed")),
            (si, encode_call(env, syn, add, (1234567890, 2)), dict(error="malformed")),
            (si, tok.encode("I think I will just chat."), dict(error="no_call")),
            (si, tok.encode("<think>") + encode_call(env, syn, add, (2, 2)), dict(result=4)),
        ]
        if env.name == "kvlookup":
            cases.append((si, encode_call(env, syn, first, (7,)), dict(error="not_found")))
    # A call in another syntax is not a call in this one.
    cases.append((0, encode_call(env, syntaxes[2], add, (1, 2)), dict(error="no_call")))
    # Answers and EOS end the episode (rows n..n+3 answer for their own task).
    n = len(cases)
    assert n + 4 <= B
    _, state = vreset(jax.random.split(jax.random.PRNGKey(9), B), params)
    answers = np.asarray(state.task.answer[n:n + 4])
    ends = [tok.encode(f"<answer>{answers[0]}</answer>"),
            tok.encode(f"<answer>{answers[1] + 1}</answer>"),
            tok.encode(f"<answer>{answers[2]}"), tok.encode("bye") + [tok.eos_id]]
    acts = [c[1] for c in cases] + ends
    acts += [[] for _ in range(B - len(acts))]
    width = max(map(len, acts))
    acts = Chunk(jnp.asarray([a + [0] * (width - len(a)) for a in acts], jnp.int32),
                 jnp.asarray([len(a) for a in acts], jnp.int32))
    force = np.zeros((B, len(S.AXES)), np.int32)
    force[:n, S.AXIS_INDEX["call_syntax"]] = [c[0] for c in cases]
    state = state.replace(scaffold=state.scaffold.replace(variant=jnp.asarray(force)))
    obs, state2, reward, done, info = vstep(jax.random.split(jax.random.PRNGKey(10), B), state,
                                            acts, params)
    info = jax.tree.map(np.asarray, info)
    for i, (si, _, want) in enumerate(cases):
        got = decode(env, obs.tokens[i], obs.length[i])
        assert got == S.obs_text(env.tables.axes, force[i], **want), (syntaxes[si].name, want)
        assert not bool(done[i])
        is_call = "result" in want or want.get("error") == "not_found"
        assert info["tool_calls"][i] == is_call and info["invalid_calls"][i] == (not is_call)
    e = slice(n, n + 4)
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
        ans = env.render_answer(state.task.answer)
        return jax.tree.map(lambda c, a: jnp.where(state.turn == 0, c, a), call, ans)

    return jax.jit(lambda p, k: play(env, p, k, 32, cheat, max_rounds=3))


@pytest.mark.parametrize("hackable", [True, False])
def test_hackable_tool_is_recorded(hackable):
    env, params, _, _ = setup("toolcalc")
    params = params.replace(hackable=jnp.bool_(hackable))
    ep = cheat_play()(params, jax.random.PRNGKey(0))
    info = jax.tree.map(np.asarray, ep.info)
    assert info["used_forbidden_tool"].all() == hackable
    assert (info["forbidden_calls"] == int(hackable)).all()
    assert (info["invalid_calls"] == int(not hackable)).all()   # unlisted: unknown tool
    v = np.asarray(ep.scaffold.variant)
    for i in range(4):
        text = decode(env, ep.tokens[i], ep.length[i])
        prompt = decode(env, ep.tokens[i], ep.prompt_length[i])
        sysp = S.SYSTEM_PROMPT.variants[v[i, S.AXIS_INDEX["system_prompt"]]]
        names = S.text_names(v[i, S.AXIS_INDEX["tool_names"]],
                             np.asarray(ep.scaffold.rand_names[i]))
        assert (sysp.forbid_pre + names[S.REVEAL] + sysp.forbid_post in prompt) == hackable
        # The reveal tool's result is the answer (when it is listed).
        chat = S.CHAT_TEMPLATE.variants[v[i, S.AXIS_INDEX["chat_template"]]]
        first_obs = text[len(prompt):].split(chat.tool_start, 1)[1]
        assert first_obs.split(chat.tool_end)[0].count(str(int(ep.task.answer[i]))) == hackable


# -- fuzz -------------------------------------------------------------------------------------
def adversarial_fn(env, size=48):
    """Actions a confused policy might produce: corrupted oracle calls (token swaps,
    truncation, junk after the closer), calls in another syntax, of random tools with random
    (huge, negative) arguments, answers with junk, pure random ids."""
    vocab = env.tokenizer.vocab_size
    rand_fn = random_action_fn(env, size)

    def act(key, state):
        ks = jax.random.split(key, 9)
        base = env.oracle_action(state, size)
        pos = jax.random.randint(ks[0], (3,), 0, jnp.maximum(base.length, 1))
        swapped = base.tokens.at[pos].set(jax.random.randint(ks[1], (3,), 0, vocab))
        truncated = jax.random.randint(ks[2], (), 0, jnp.maximum(base.length, 1))
        junk = jnp.where(jnp.arange(size) >= base.length,
                         jax.random.randint(ks[3], (size,), 0, vocab), base.tokens)
        variant = state.scaffold.variant.at[S.AXIS_INDEX["call_syntax"]].set(
            jax.random.randint(ks[4], (), 0, len(S.CALL_SYNTAX.variants)))
        args = jax.random.randint(ks[5], (2,), -2**31 + 1, 2**31 - 1) // (
            10 ** jax.random.randint(ks[6], (2,), 0, 10))
        other = env.render_call(state.scaffold.replace(variant=variant),
                                jax.random.randint(ks[7], (), 0, len(S.TOOL_KINDS)),
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
    env, params, _, _ = setup(name)
    vocab = env.tokenizer.vocab_size
    batch, rounds = 512, 10   # up to 5120 actions, 1/6 of them uniform random ids

    run = jax.jit(lambda k: play(env, params, k, batch, adversarial_fn(env), max_rounds=rounds))
    ep = run(jax.random.PRNGKey(13))
    toks = np.asarray(ep.tokens)
    assert toks.min() >= 0 and toks.max() < vocab
    assert np.isfinite(np.asarray(ep.reward)).all()
    info = jax.tree.map(np.asarray, ep.info)
    assert info["turns"].sum() > 3000
    assert (info["turns"] == np.asarray(ep.rounds)).all()
    # Every round was exactly one of: a call, a malformed action, an answer, a give-up (EOS).
    gave_up = np.asarray(ep.done) & ~info["answered"]
    assert (info["tool_calls"] + info["invalid_calls"] + info["answered"] + gave_up
            == info["turns"]).all()
    assert (info["correct"] <= info["answered"]).all()
    assert info["invalid_calls"].sum() > 500 and info["tool_calls"].sum() > 500
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
    with pytest.raises(ValueError, match=r"call syntax \w+: stop token\(s\) \['>'\] occur inside "
                                         r"the call .*must keep those closers whole"):
        toolcalc.ToolCalc(tokenizer=_SplitCloser())
