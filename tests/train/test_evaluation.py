"""Frozen-set evaluation: pass@k over repeated samples of the same tasks, and success broken down
by scaffold axis label, checked against the prompts the episodes actually played."""

import hashlib
import re

import jax
import numpy as np
import pytest

from configs.toolcalc_grpo import get_config as default_config
from rlx.envs import scaffold as S
from rlx.rollout import episode_keys
from rlx.train import evaluation
from rlx.train import setup as setup_lib
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
    labels = scaffold_labels(s, traj)
    prompts = _prompts(s, traj)
    assert set(labels) == set(S.AXES)
    assert all(len(v) == len(prompts) for v in labels.values())
    # The labels of the rows are what the played prompts show.
    assert [_syntax_from_text(p) for p in prompts] == list(labels["call_syntax"])
    assert [_name_style_from_text(p) for p in prompts] == list(labels["tool_names"])
    assert len(set(labels["call_syntax"])) > 1 and len(set(labels["tool_names"])) > 1
    # Each varying axis partitions the rows; the per-label rates average back to the mean.
    correct = np.random.default_rng(0).random(len(prompts)) < 0.5
    table = success_by_variant(s, split, traj, correct)
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
    assert success_by_variant(s, split, traj) == success_by_variant(s, split, traj,
                                                                    traj.info["correct"])
    with pytest.raises(ValueError, match="correct has 3 rows, the episodes have 32"):
        success_by_variant(s, split, traj, correct[:3])


def _frozen_set(s, split, n):
    """(task, scaffold) of the first `n` episodes of the frozen `split` set, from `env.reset`
    with the set's keys (what `run_episodes` resets with)."""
    keys = episode_keys(evaluation.eval_key(s.config, split), n, 1)[0]
    state = jax.jit(jax.vmap(s.env.reset, (0, None)))(keys, s.eval_params[split])[1]
    return state.task, state.scaffold


def _digest(tree) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()[:16]


def test_evaluation_plays_the_frozen_set(setup_and_params):
    s, params = setup_and_params
    _, traj = evaluation.evaluate(s, params, "heldout")
    task, sc = _frozen_set(s, "heldout", s.config.eval.num_episodes)
    jax.tree.map(np.testing.assert_array_equal, (traj.task, traj.scaffold), (task, sc))


# The default config's frozen sets (tasks and scaffolds of its 512 train-scaffold and 512
# held-out-scaffold episodes). Every evaluation in docs/RESULTS.md was played on these episodes.
# If this fails (a JAX version with other random streams, a change to how envs sample tasks or
# scaffolds), new figures are not comparable with the recorded ones: say so in RESULTS before
# updating the digests.
FROZEN_SETS = {"train": "d0347de8277e015e", "heldout": "1b251f91541df102"}


def test_the_default_frozen_sets_are_pinned():
    s = setup_lib.build(default_config())
    assert s.config.eval.num_episodes == 512
    got = {split: _digest(_frozen_set(s, split, 512)) for split in FROZEN_SETS}
    assert got == FROZEN_SETS


def test_heldout_set_params_hold_out_one_axis_over_train_or_canonical_scaffolds(
        setup_and_params):
    s, _ = setup_and_params
    train_vary = S.axes_mask(s.config.env.train_axes)
    p = evaluation.heldout_set_params(s, "chat_template", others="train")
    np.testing.assert_array_equal(p.split, S.axes_mask("chat_template").astype(int))
    np.testing.assert_array_equal(p.vary, train_vary | S.axes_mask("chat_template"))
    canonical = evaluation.heldout_set_params(s, "chat_template")
    assert int(canonical.split) == 1
    np.testing.assert_array_equal(canonical.vary, S.axes_mask("chat_template"))
    with pytest.raises(ValueError, match=r"others='trian'; allowed: 'canonical', 'train'"):
        evaluation.heldout_set_params(s, "chat_template", others="trian")
