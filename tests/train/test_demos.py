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
