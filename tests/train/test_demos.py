"""Warm-start data: the mixture parser and its row counts, the copy corpus against a numpy
reference, and a mixed batch whose env rows are oracle episodes of the named axes."""

import jax
import numpy as np
import pytest

from rlx import envs
from rlx.train import demos


def test_parse_mixture_and_errors():
    assert demos.parse_mixture("tools_only:1, all_axes:2.5,copy") == [
        ("tools_only", 1.0), ("all_axes", 2.5), ("copy", 1.0)]
    assert demos.parse_mixture("tool_desc+tool_order:3") == [("tool_desc+tool_order", 3.0)]
    with pytest.raises(ValueError, match="weight must be a positive number"):
        demos.parse_mixture("all_axes:0")
    with pytest.raises(ValueError, match="weight must be a positive number"):
        demos.parse_mixture("all_axes:x")
    with pytest.raises(KeyError, match="unknown axes preset 'everything'"):
        demos.parse_mixture("everything:1")
    with pytest.raises(ValueError, match="names no source"):
        demos.parse_mixture(" , ")


@pytest.mark.parametrize("weights,batch", [((1, 1, 3, 1), 16), ((1,), 7), ((2, 1), 5),
                                           ((1, 1, 1), 32)])
def test_row_counts_are_proportional_and_sum_to_the_batch(weights, batch):
    counts = demos.row_counts([(str(i), float(w)) for i, w in enumerate(weights)], batch)
    assert sum(counts) == batch
    exact = batch * np.array(weights) / sum(weights)
    assert (np.abs(np.array(counts) - exact) < 1).all()


def test_copy_rows_match_a_numpy_reference():
    ids = np.arange(100, 140, dtype=np.int32)
    toks, mask = demos.copy_rows(jax.random.key(0), 6, 64, ids, pad_id=0, sep_id=3,
                                 span=(5, 12))
    toks, mask = np.asarray(toks), np.asarray(mask)
    for row, m in zip(toks, mask, strict=True):
        n = int(np.argmax(row == 3))              # the first separator
        assert 5 <= n <= 12
        want_mask = np.zeros(64, bool)
        pieces = 64 // (2 * n + 1)
        for q in range(pieces):
            start = q * (2 * n + 1)
            x = row[start: start + n]
            assert np.isin(x, ids).all() and row[start + n] == 3
            np.testing.assert_array_equal(row[start + n + 1: start + 2 * n + 1], x)
            want_mask[start + n + 1: start + 2 * n + 1] = True
        assert (row[pieces * (2 * n + 1):] == 0).all()
        np.testing.assert_array_equal(m, want_mask)


def test_mixed_batch_rows_follow_their_sources():
    env, params = envs.make("toolcalc", num_steps=2, min_steps=1)
    fn = jax.jit(demos.make_demos(env, params, batch=8, max_len=384, max_rounds=6,
                                  mixture="none:1,all_axes:2,copy:1"))
    toks, mask = (np.asarray(x) for x in fn(jax.random.key(1)))
    assert toks.shape == mask.shape == (8, 384)
    tok = env.tokenizer
    texts = [tok.decode(t[t != tok.pad_id].tolist()) for t in toks]
    # Rows 0-1: canonical scaffold (the canonical names are listed); rows 2-5: procedural
    # scaffolds (no canonical tool list); rows 6-7: copy rows, whose repeat is the masked span.
    for t in texts[:2]:
        assert "add: adds two numbers" in t, t
    for t in texts[2:6]:
        assert "add: adds two numbers" not in t and "<answer>" in t, t
    for row, m in zip(toks[6:], mask[6:], strict=True):
        n = int(np.argmax(row == tok.eos_id))
        np.testing.assert_array_equal(row[m][:n], row[:n])    # the first piece's repeat
        assert m.sum() >= 384 // 65 * 4


def test_recall_rows_match_a_numpy_reference():
    ids = np.arange(100, 160, dtype=np.int32)
    sep = 3
    toks, mask = demos.recall_rows(jax.random.key(2), 12, 96, ids, pad_id=0, sep_id=sep)
    toks, mask = np.asarray(toks), np.asarray(mask)
    sizes, queries = set(), 0
    for row, m in zip(toks, mask, strict=True):
        seps = np.flatnonzero(row == sep)
        name = int(seps[0]) - 1                       # the first entry: name ids, desc, SEP
        n = int(np.argmax(np.diff(seps) == 1)) + 1    # entries before the query's double SEP
        assert 1 <= name <= 4 and 2 <= n <= 5
        size = n * (name + 2) + 2 + name
        sizes.add((n, name))
        want_mask = np.zeros_like(m)
        pieces = len(row) // size
        for p in range(pieces):
            piece = row[p * size:(p + 1) * size]
            entries = piece[:n * (name + 2)].reshape(n, name + 2)
            assert (entries[:, -1] == sep).all() and np.isin(entries[:, :-1], ids).all()
            query = piece[n * (name + 2):]
            assert query[0] == sep
            hits = np.flatnonzero(entries[:, name] == query[1])
            assert len(hits) >= 1                     # the queried desc is listed
            assert any((query[2:] == entries[h, :name]).all() for h in hits)
            if len(hits) == 1:                        # ambiguous queries carry no loss
                want_mask[p * size + n * (name + 2) + 2:(p + 1) * size] = True
                queries += 1
        assert (row[pieces * size:] == 0).all()
        np.testing.assert_array_equal(m, want_mask)
    assert len(sizes) > 3 and queries > 50


def test_recall_is_a_mixture_source():
    env, params = envs.make("toolcalc", num_steps=2, min_steps=1)
    assert demos.parse_mixture("recall:2,copy:1") == [("recall", 2.0), ("copy", 1.0)]
    fn = jax.jit(demos.make_demos(env, params, batch=4, max_len=128, max_rounds=6,
                                  mixture="recall:1,copy:1"))
    toks, mask = (np.asarray(x) for x in fn(jax.random.key(0)))
    assert mask[:2].sum() > 0 and (toks[:2] == env.tokenizer.eos_id).sum() > 10


def test_glossary_rows_match_a_numpy_reference():
    atoms = np.arange(100, 130, dtype=np.int32).reshape(3, 10)     # casing -> atoms
    seps, words = np.array([40, 41, 42], np.int32), np.arange(200, 260, dtype=np.int32)
    marks = np.array([50, 51, 52, 53], np.int32)
    query, space, newline = 60, 61, 62
    toks, mask = demos.glossary_rows(jax.random.key(3), 16, 256, atoms, seps, words, marks,
                                     query_id=query, space_id=space, newline_id=newline,
                                     pad_id=0)
    toks, mask = np.asarray(toks), np.asarray(mask)
    shapes, queries = set(), 0
    for row, m in zip(toks, mask, strict=True):
        want_mask = np.zeros_like(m)
        ends = np.flatnonzero(row == newline)
        lines = np.split(row[: ends[-1] + 1], ends[:-1] + 1)
        assert (row[ends[-1] + 1:] == 0).all()        # the partial last piece is padding
        start, entries = 0, []
        for line in lines:
            width = len(line)
            d = width - 8
            assert 1 <= d <= 3 and line[1] == space and line[-1] == newline
            if line[0] != query:                      # entry: mark ␣ a0 sep a1 mark' ␣ words \n
                assert line[0] in marks and line[5] in marks and line[6] == space
                entries.append((line[2:5], line[7:7 + d], line[0], line[5]))
                start += width
                continue
            # query: ? ␣ words mark' ␣ a0 sep a1 \n, after 2-5 entries of the same shape
            n = len(entries)
            assert 2 <= n <= 5 and {len(w) for _, w, _, _ in entries} == {d}
            assert len({(a, b) for _, _, a, b in entries}) == 1 and line[d + 2] == entries[0][3]
            names = np.array([e[0] for e in entries])
            assert np.isin(names[:, 1], seps).all() and len(set(names[:, 1])) == 1
            case = [c for c in range(3) if np.isin(names[:, [0, 2]], atoms[c]).all()]
            assert case, names                        # every atom from one casing's row
            desc, name = line[2:2 + d], line[d + 4:d + 7]
            hits = [i for i, e in enumerate(entries) if (e[1] == desc).all()]
            assert hits and any((names[i] == name).all() for i in hits)
            if sum(e[1][0] == desc[0] for e in entries) == 1:     # unambiguous: the loss
                pos = start + d + 4
                want_mask[pos:pos + 3] = True
                queries += 1
            shapes.add((n, d))
            start, entries = start + width, []
        assert not entries                            # no list without its query
        np.testing.assert_array_equal(m, want_mask)
    assert len(shapes) > 5 and queries > 50


def test_glossary_is_a_mixture_source_with_names_from_both_splits():
    env, params = envs.make("toolcalc", num_steps=2, min_steps=1)
    fn = jax.jit(demos.make_demos(env, params, batch=8, max_len=384, max_rounds=6,
                                  mixture="glossary:1"))
    toks, mask = (np.asarray(x) for x in fn(jax.random.key(0)))
    tok, tables = env.tokenizer, env.tables
    targets = toks[mask].reshape(-1, 3)               # atom, separator, atom
    heldout = {int(tables.flat[tables.atom_ref[c, i, 0]]) for c in range(3)
               for i in range(tables.n_train_atoms[c], tables.n_atoms[c])}
    assert len(targets) > 50 and np.isin(targets[:, 1], [tok.encode(s)[0] for s in "_.-"]).all()
    assert 0 < np.isin(targets[:, [0, 2]], list(heldout)).mean() < 0.5
