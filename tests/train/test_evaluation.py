"""Frozen-set evaluation: pass@k over repeated samples of the same tasks, and success broken down
by scaffold variant, checked against the prompts the episodes actually played."""

import re

import numpy as np
import pytest

from rlx.envs import scaffold as S
from rlx.train import loop
from rlx.train.evaluation import initial_params, scaffold_variants, success_by_variant
from tests.train.test_loop import small_config


@pytest.fixture(scope="module")
def setup_and_params():
    cfg = small_config(**{"eval.num_episodes": 16, "rollout.max_rounds": 1})
    return initial_params(cfg)


def _prompts(s, traj):
    toks, plen = np.asarray(traj.tokens), np.asarray(traj.prompt_length)
    return [s.tokenizer.decode([int(t) for t in toks[i, : plen[i]]]) for i in range(len(plen))]


def test_samples_replay_the_same_tasks_and_pass_at_k(setup_and_params):
    s, params = setup_and_params
    one, traj1 = loop.evaluate(s, params, "heldout")
    k = 4
    many, traj_k = loop.evaluate(s, params, "heldout", samples=k, temperature=1.0)
    assert traj_k.batch_size == k * traj1.batch_size
    prompts1, prompts_k = _prompts(s, traj1), _prompts(s, traj_k)
    for i, p in enumerate(prompts1):  # row i of samples=1 is group i of samples=k
        assert prompts_k[i * k: (i + 1) * k] == [p] * k
    correct = np.asarray(traj_k.info["correct"]).reshape(-1, k)
    assert many[f"pass@{k}"] == pytest.approx(correct.any(axis=1).mean())
    assert many["success"] == pytest.approx(correct.mean())
    assert f"pass@{k}" not in one
    with pytest.raises(ValueError, match="samples=0 must be >= 1"):
        loop.evaluate(s, params, "heldout", samples=0)


def _variant_from_text(axis, prompt):
    """Which variant of `axis` a decoded prompt shows (the reference for `scaffold_variants`)."""
    desc = max((i for i, d in enumerate(S.TOOL_DESC.variants) if d.header in prompt),
               key=lambda i: len(S.TOOL_DESC.variants[i].header))
    if axis == "tool_desc":
        return desc
    d = S.TOOL_DESC.variants[desc]
    listed = set(re.findall("^" + re.escape(d.line_pre) + r"(\w+)" + re.escape(d.line_mid),
                            prompt, flags=re.M))
    for i, names in enumerate(S.TOOL_NAMES.variants):
        if isinstance(names, tuple) and listed == set(names[:3]):
            return i
    assert len(listed) == 3 and all(len(n) == 3 for n in listed), listed
    upper = all(n.isupper() for n in listed)
    return S.TOOL_NAMES.variants.index(S.RANDOM_UPPER if upper else S.RANDOM_LOWER)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_success_by_variant_matches_the_played_prompts(setup_and_params, split):
    s, params = setup_and_params
    _, traj = loop.evaluate(s, params, split, samples=2, temperature=1.0)
    variants = scaffold_variants(s, split, samples=2)
    prompts = _prompts(s, traj)
    assert variants.shape == (len(prompts), len(S.AXES))
    for axis in ("tool_names", "tool_desc"):
        a = S.AXIS_INDEX[axis]
        assert [_variant_from_text(axis, p) for p in prompts] == list(variants[:, a]), axis
    # Each varying axis partitions the rows; the per-variant rates average back to the mean.
    correct = np.random.default_rng(0).random(len(prompts)) < 0.5
    table = success_by_variant(s, split, correct, samples=2)
    axes = s.config.env.eval_axes if split == "heldout" else s.config.env.train_axes
    assert set(table) == set(S.AXIS_PRESETS[axes])
    for axis, rows in table.items():
        a = S.AXIS_INDEX[axis]
        assert sum(n for _, n in rows.values()) == len(correct)
        assert sum(r * n for r, n in rows.values()) == pytest.approx(correct.sum())
        for label, (rate, n) in rows.items():
            v = int(label.split("[")[1].split("]")[0])
            assert label.startswith(split)
            rows_v = variants[:, a] == v
            assert n == rows_v.sum()
            np.testing.assert_allclose(rate, correct[rows_v].mean())
    with pytest.raises(ValueError, match="correct has 3 rows"):
        success_by_variant(s, split, correct[:3], samples=2)
