"""Frozen-set evaluation: pass@k over repeated samples of the same tasks, and success broken down
by scaffold axis label, checked against the prompts the episodes actually played."""

import re

import numpy as np
import pytest

from rlx.envs import scaffold as S
from rlx.train import evaluation
from rlx.train.evaluation import initial_params, scaffold_labels, success_by_variant
from tests.train.test_loop import small_config


@pytest.fixture(scope="module")
def setup_and_params():
    # Procedural prompts reach ~310 tokens: room for them and one round.
    cfg = small_config(**{"eval.num_episodes": 16, "rollout.max_rounds": 1,
                          "rollout.max_len": 384})
    return initial_params(cfg)


def _prompts(s, traj):
    toks, plen = np.asarray(traj.tokens), np.asarray(traj.prompt_length)
    return [s.tokenizer.decode([int(t) for t in toks[i, : plen[i]]]) for i in range(len(plen))]


def test_samples_replay_the_same_tasks_and_pass_at_k(setup_and_params):
    s, params = setup_and_params
    one, traj1 = evaluation.evaluate(s, params, "heldout")
    k = 4
    many, traj_k = evaluation.evaluate(s, params, "heldout", samples=k, temperature=1.0)
    assert traj_k.batch_size == k * traj1.batch_size
    prompts1, prompts_k = _prompts(s, traj1), _prompts(s, traj_k)
    for i, p in enumerate(prompts1):  # row i of samples=1 is group i of samples=k
        assert prompts_k[i * k: (i + 1) * k] == [p] * k
    correct = np.asarray(traj_k.info["correct"]).reshape(-1, k)
    assert many[f"pass@{k}"] == pytest.approx(correct.any(axis=1).mean())
    assert many["success"] == pytest.approx(correct.mean())
    assert f"pass@{k}" not in one
    with pytest.raises(ValueError, match="samples=0 must be >= 1"):
        evaluation.evaluate(s, params, "heldout", samples=0)


# The example call (tool_name, 3, 5) of each call-syntax family, as a reader would spot it.
_Q = "[\"']"
_SYNTAX_PATTERNS = {
    "json": _Q + "tool_name" + _Q + ", " + _Q + r"\w+" + _Q + r": \{" + _Q + r"\w+" + _Q
            + ": 3, " + _Q + r"\w+" + _Q + r": 5\}\}",
    "json_list": _Q + "tool_name" + _Q + ", " + _Q + r"\w+" + _Q + r": \[3, 5\]\}",
    "xml": r"<invoke \w+=" + _Q + "tool_name" + _Q + "><parameter name=",
    "python": r"tool_name\(3, 5\)",
    "kwargs": r"tool_name\(\w+=3, \w+=5\)",
    "flags": r"tool_name --\w+ 3 --\w+ 5",
}


def _syntax_from_text(prompt):
    """The call-syntax family a decoded prompt's example call shows."""
    found = [f for f, pat in _SYNTAX_PATTERNS.items() if re.search(pat, prompt)]
    assert len(found) == 1, (found, prompt)
    return found[0]


def _name_style_from_text(prompt):
    """The tool-name style (separator and casing) of the names a decoded prompt lists:
    letter-run atoms joined by a separator (not `tool_name` or ChatML markup), or `canonical`
    (add, sub, ...)."""
    names = [n for n in re.findall(r"\b([A-Za-z]{2,})([_.\-])([A-Za-z]{2,})\b", prompt)
             if "".join(n) not in ("tool_name", "tool_call", "im_start", "im_end")]
    if not names:
        assert re.search(r"\badd\b", prompt), prompt
        return "canonical"
    cases = {"lower" if a.islower() and b.islower() else "upper" if a.isupper() and b.isupper()
             else "capital" if a.istitle() and b.istitle() else "mixed" for a, _, b in names}
    seps = {sep for _, sep, _ in names}
    assert len(cases) == 1 and len(seps) == 1 and "mixed" not in cases, names
    return seps.pop() + cases.pop()


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_success_by_variant_matches_the_played_prompts(setup_and_params, split):
    s, params = setup_and_params
    _, traj = evaluation.evaluate(s, params, split, samples=2, temperature=1.0)
    labels = scaffold_labels(s, split, samples=2)
    prompts = _prompts(s, traj)
    assert set(labels) == set(S.AXES)
    assert all(len(v) == len(prompts) for v in labels.values())
    # The labels of the rows are what the played prompts show.
    assert [_syntax_from_text(p) for p in prompts] == list(labels["call_syntax"])
    assert [_name_style_from_text(p) for p in prompts] == list(labels["tool_names"])
    assert len(set(labels["call_syntax"])) > 1 and len(set(labels["tool_names"])) > 1
    # Each varying axis partitions the rows; the per-label rates average back to the mean.
    correct = np.random.default_rng(0).random(len(prompts)) < 0.5
    table = success_by_variant(s, split, correct, samples=2)
    axes = s.config.env.eval_axes if split == "heldout" else s.config.env.train_axes
    assert set(table) == {a for a, on in zip(S.AXES, S.axes_mask(axes), strict=True) if on}
    for axis, rows in table.items():
        assert set(rows) == set(labels[axis])
        assert sum(n for _, n in rows.values()) == len(correct)
        assert sum(r * n for r, n in rows.values()) == pytest.approx(correct.sum())
        for label, (rate, n) in rows.items():
            rows_l = labels[axis] == label
            assert n == rows_l.sum()
            np.testing.assert_allclose(rate, correct[rows_l].mean())
    with pytest.raises(ValueError, match="correct has 3 rows"):
        success_by_variant(s, split, correct[:3], samples=2)
