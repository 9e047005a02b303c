"""The procedural scaffolds: split rules per axis, held-out strings absent from training
episodes, token rendering equal to tokenizing the text renderer's string, names that tokenize
the same in the tool list and in a call, and the sampler's determinism and ranges."""

from __future__ import annotations

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx import envs
from rlx.envs.scaffold import axes as A
from rlx.envs.scaffold import render as R
from rlx.envs.scaffold.tables import axes_mask, scaffold_text_names
from rlx.rollout.scripted import play

ALL = axes_mask("all_axes")


@pytest.fixture(scope="module")
def calc():
    return envs.make("toolcalc", num_steps=2, min_steps=1, axes="all_axes")


def _episodes(env, params, split: int, n: int, seed: int):
    p = params.replace(split=jnp.asarray(split), vary=jnp.asarray(ALL))
    return jax.device_get(jax.jit(lambda k: play(env, p, k, n))(jax.random.key(seed)))


def _row(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


# -- split rules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("grammar", A.STATIC_GRAMMARS, ids=lambda g: g.name)
def test_grammar_splits_are_disjoint_renderings(grammar):
    train, held = grammar.choices()
    assert len(train) >= 4 and len(held) >= 2
    render = lambda c: tuple(grammar.text(c, f) for f in grammar.fields)
    train_texts = {render(c) for c in train}
    held_texts = {render(c) for c in held}
    # Every choice renders differently, and no held-out rendering is a train rendering.
    assert len(train_texts) == len(train) and len(held_texts) == len(held)
    assert not train_texts & held_texts
    atoms = lambda rows: {(p, int(c[1 + grammar.pool_names.index(p)]))
                          for c in rows for p in grammar.used_pools(int(c[0]))}
    # Disjoint combinations: every atom of a held-out choice also appears in training.
    assert atoms(held) <= atoms(train)
    # The canonical choice is train row 0.
    assert not train[0].any()


def test_name_atoms_are_split_by_letter(calc):
    """Train atoms are hundreds of the tokenizer's own pieces and never contain a held-out
    letter; held-out atoms always do."""
    env, _ = calc
    tables = env.tables
    for case, (train, held) in zip(A.NAME_CASES, tables.atom_text, strict=True):
        assert len(set(train + held)) == len(train) + len(held)
        assert all(re.search("[hjvwxz]", a, re.I) for a in held)
        assert not [a for a in train if re.search("[hjvwxz]", a, re.I)]
        assert all(len(env.tokenizer.encode(a)) == 1 for a in train + held), case
    assert sum(len(t) for t, _ in tables.atom_text) > 400


# -- the sampler ---------------------------------------------------------------------------------

def test_sampler_is_deterministic_and_respects_vary(calc):
    env, _ = calc
    sample = jax.jit(jax.vmap(env.tables.sample, (0, None, None)))
    keys = jax.random.split(jax.random.key(3), 256)
    a = jax.device_get(sample(keys, 1, jnp.asarray(ALL)))
    b = jax.device_get(sample(keys, 1, jnp.asarray(ALL)))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    c = jax.device_get(sample(jax.random.split(jax.random.key(4), 256), 1, jnp.asarray(ALL)))
    assert (np.asarray(a.choice) != np.asarray(c.choice)).any()
    assert np.asarray(a.heldout).all()

    none = jax.device_get(sample(keys, 1, jnp.asarray(axes_mask("none"))))
    assert not np.asarray(none.choice).any() and (np.asarray(none.name_style) == -1).all()
    np.testing.assert_array_equal(np.asarray(none.order),
                                  np.broadcast_to(np.arange(len(env.tools)), none.order.shape))
    assert not np.asarray(none.heldout).any()


def test_names_orders_and_fault_rates_per_split(calc):
    env, _ = calc
    sample = jax.jit(jax.vmap(env.tables.sample, (0, None, None)))
    keys = jax.random.split(jax.random.key(5), 4096)
    for split in (0, 1):
        sc = jax.device_get(sample(keys, split, jnp.asarray(ALL)))
        atoms = np.asarray(sc.name_atoms)
        case = np.asarray(sc.name_style) % len(A.NAME_CASES)
        n_train = env.tables.n_train_atoms[case][:, None, None]
        assert ((atoms >= n_train) == bool(split)).all()
        assert (atoms < env.tables.n_atoms[case][:, None, None]).all()
        # Names within an episode never share an atom, so they are distinct.
        flat = atoms.reshape(len(keys), -1)
        assert all(len(set(r)) == flat.shape[1] for r in flat)
        names = {scaffold_text_names(env.tables, _row(sc, i))[A.ADD] for i in range(len(keys))}
        assert len(names) > 1000                      # thousands of names per split
        # Order: a permutation; the listed non-reveal tools in odd order exactly when held out.
        order = np.asarray(sc.order)
        assert (np.sort(order, 1) == np.arange(len(env.tools))).all()
        main = [o[o != len(env.tools) - 1] for o in order]
        inversions = [sum(x > y for x, y in itertools.combinations(m, 2)) % 2 for m in main]
        assert set(inversions) == {split}
        assert len({tuple(o) for o in order}) == 3 * 4   # every such order, reveal anywhere
        lo, hi = A.FAULT_RATE_RANGES["heldout" if split else "train"]
        rate = np.asarray(sc.fault_rate)
        assert (rate >= lo).all() and (rate <= hi).all() and rate.std() > 0.03


def test_per_axis_split_holds_out_exactly_its_axes(calc):
    """A per-axis split draws each axis as the scalar split of that axis would with the same
    key: the held-out axis as in an all-held-out draw, every other axis as in an all-train
    draw."""
    env, _ = calc
    tables = env.tables
    sample = jax.jit(jax.vmap(tables.sample, (0, None, None)))
    keys = jax.random.split(jax.random.key(6), 512)
    train, held = (jax.device_get(sample(keys, s, jnp.asarray(ALL))) for s in (0, 1))
    field_axis = {"name_style": "tool_names", "name_atoms": "tool_names", "words": "call_syntax",
                  "order": "tool_order", "fault_rate": "fault_rate"}
    for axis in A.AXES:
        split = jnp.asarray(axes_mask(axis), jnp.int32)
        mixed = jax.device_get(sample(keys, split, jnp.asarray(ALL)))
        np.testing.assert_array_equal(mixed.heldout, np.broadcast_to(axes_mask(axis),
                                                                     mixed.heldout.shape))
        rows = np.asarray(tables.axis_of_row) == A.AXIS_INDEX[axis]
        np.testing.assert_array_equal(mixed.choice[:, rows], held.choice[:, rows])
        np.testing.assert_array_equal(mixed.choice[:, ~rows], train.choice[:, ~rows])
        for field, owner in field_axis.items():
            want = held if owner == axis else train
            np.testing.assert_array_equal(getattr(mixed, field), getattr(want, field), field)


def test_split_strings_of_the_params():
    p = envs.make("toolcalc", split="heldout:tool_names+chat_template", axes="all_axes")[1]
    np.testing.assert_array_equal(p.split, axes_mask("tool_names+chat_template").astype(int))
    assert int(envs.make("toolcalc", split="heldout")[1].split) == 1
    with pytest.raises(KeyError, match=r"unknown split 'train:tool_names'; allowed: "):
        envs.make("toolcalc", split="train:tool_names")
    with pytest.raises(KeyError, match=r"unknown scaffold axes \['names'\]"):
        envs.make("toolcalc", split="heldout:names+tool_order")


# -- rendering -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["toolcalc", "kvlookup"])
@pytest.mark.parametrize("split", [0, 1])
def test_token_rendering_equals_tokenized_text(name, split):
    """The jitted token renderer gives exactly the ids of tokenizing the host text renderer's
    string, for the prompt, every call, every observation and the answer of whole oracle
    episodes (faults on), on 200 sampled scaffolds of the split."""
    env, params = envs.make(name, num_steps=2, min_steps=1, axes="all_axes",
                            hackable=bool(split))
    tok = env.tokenizer
    ep = _episodes(env, params, split, 200, seed=11 + split)
    for i in range(200):
        sc, task = _row(ep.scaffold, i), _row(ep.task, i)
        x, y = env.task_text(task)
        text = R.render_text(env.tables, sc, R.prompt, env.tools, bool(split), x, y)
        n = int(ep.prompt_length[i])
        assert tok.encode(text) == ep.tokens[i, :n].tolist(), (i, text)
        # The rest of the episode: alternating policy spans and observations.
        rest = ep.tokens[i, n: int(ep.length[i])]
        mask = ep.policy_mask[i, n: int(ep.length[i])]
        spans = [list(g) for _, g in itertools.groupby(zip(rest.tolist(), mask.tolist(), strict=True),
                                                       key=lambda t: t[1])]
        names = scaffold_text_names(env.tables, sc)
        for span in spans:
            ids = [t for t, _ in span]
            decoded = tok.decode(ids)
            assert tok.encode(decoded) == ids, decoded
            if span[0][1]:   # a policy round: the oracle's call or answer
                m = re.fullmatch(r"(.*?)(-?\d+)(.*?)(?:(-?\d+)(.*))?", decoded, re.S)
                assert m is not None, decoded
                if decoded.startswith(A.ANSWER_OPEN):
                    assert decoded == R.render_text(env.tables, sc, R.answer, int(m[2]))
                else:
                    kind = next(k for k in env.tools if names[k] in decoded)
                    args = [int(m[2])] + ([int(m[4])] if m[4] is not None else [0])
                    assert decoded == R.render_text(env.tables, sc, R.call, kind, *args)


def test_names_tokenize_identically_in_list_and_call(calc):
    """A name's ids in the tool list equal its ids in a call and its ids on its own: a policy
    can copy it token by token."""
    env, params = calc
    tok = env.tokenizer
    ep = _episodes(env, params, 1, 64, seed=21)
    for i in range(64):
        sc = _row(ep.scaffold, i)
        toks = ep.tokens[i, : int(ep.length[i])].tolist()
        n = int(ep.prompt_length[i])
        first_call_kind = int(ep.task.plan_tool[i, 0])
        name = scaffold_text_names(env.tables, sc)[first_call_kind]
        ids = tok.encode(name)
        assert _occurs(ids, toks[:n]), name
        policy = [t for t, m in zip(toks, ep.policy_mask[i, : len(toks)], strict=True) if m]
        assert _occurs(ids, policy), name


def _occurs(ids: list[int], seq: list[int]) -> bool:
    return any(seq[j: j + len(ids)] == ids for j in range(len(seq) - len(ids) + 1))


def test_heldout_strings_never_occur_in_training_episodes(calc):
    """No held-out name, and no call-syntax field holding a held-out key, occurs anywhere in 1024
    decoded training episodes (all axes varying, hackable so the reveal tool is listed too)."""
    env, params = calc
    params = params.replace(hackable=jnp.asarray(True))
    tok = env.tokenizer
    ep = _episodes(env, params, 0, 1024, seed=31)
    train_text = "\n".join(tok.decode(ep.tokens[i, : int(ep.length[i])].tolist())
                           for i in range(1024))
    held_names = [A.cased(a, case) + sep + A.cased(b, case) for sep, case in A.NAME_STYLES
                  for a in A.HELDOUT_ATOMS for b in A.HELDOUT_ATOMS if a != b]
    assert len(held_names) > 5000
    assert not [n for n in held_names if n in train_text]
    # The check can fail: the train names do occur.
    train_names = {scaffold_text_names(env.tables, _row(ep.scaffold, i))[A.ADD] for i in range(1024)}
    assert all(n in train_text for n in train_names)

    # Call-syntax fields holding drawn key names: the held-out ones never occur in training,
    # the train ones do.
    keyed = lambda tree, i: {text for f in ("l0", "l1", "l2")
                             if (text := R.render_text(env.tables, _row(tree, i), _field, f))
                             != A.CALL_SYNTAX.text(_row(tree, i).choice[env.tables.row["call_syntax"]], f)}
    held = _episodes(env, params, 1, 256, seed=32).scaffold
    held_fields = set().union(*(keyed(held, i) for i in range(256)))
    assert len(held_fields) > 200 and not [f for f in held_fields if f in train_text]
    assert all(f in train_text for i in range(64) for f in keyed(ep.scaffold, i))


def _field(out, field):
    out.field("call_syntax", field)


def test_stop_tokens_are_call_closers(calc):
    env, _ = calc
    tok = env.tokenizer
    closers = {tok.decode([i]) for i in env.stop_token_ids}
    assert {"</tool_call>", "</call>", "</fn>", "</invoke>", A.ANSWER_CLOSE} <= closers
