"""The generalization experiment: arm definitions, config errors, and the `:quick` variant end
to end (two arms, one RL step each, the table and the plot, a rerun that skips finished arms)."""

import json
import os

import pytest

from configs import generalization as gen_config
from rlx.envs.scaffold import AXES, AXIS_GROUPS, axes_mask
from rlx.train import generalization


def test_arms_vary_what_their_names_say():
    assert axes_mask(generalization.arm_axes("none")).sum() == 0
    assert axes_mask(generalization.arm_axes("all_axes")).all()
    for group, axes in AXIS_GROUPS.items():
        mask = axes_mask(generalization.arm_axes(f"all_but_{group}"))
        assert [a for a, m in zip(AXES, mask, strict=True) if not m] == list(axes)
    # The groups partition the axes, so the leave-one-out arms together cover every axis.
    assert sorted(a for g in AXIS_GROUPS.values() for a in g) == sorted(AXES)


def test_unknown_arms_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="all_but_tools"):
        generalization.arm_axes("all_but_nothing")
    with pytest.raises(ValueError, match="arms='none\\+bogus'.*unknown \\['bogus'\\]"):
        gen_config.get_config("arms=none+bogus")


def test_quick_run_writes_table_plot_and_skips_finished_arms(tmp_path):
    cfg = gen_config.get_config("quick")
    out = generalization.run(cfg, str(tmp_path))
    assert set(out["results"]) == {"none", "all_axes"}
    for arm in ("none", "all_axes"):
        with open(os.path.join(tmp_path, arm, "seed0", "result.json")) as f:
            result = json.load(f)
        for when in ("start", "final"):
            assert set(result[when]) == set(generalization.eval_sets()) | {"train"}
            assert all(0.0 <= v <= 1.0 for v in result[when].values())
    assert os.path.getsize(os.path.join(tmp_path, "generalization.png")) > 10_000
    table = open(os.path.join(tmp_path, "results.md")).read()
    assert "| all_axes |" in table and "held-out all" in table
    # A rerun reads the finished arms instead of training them again.
    stamp = os.path.getmtime(os.path.join(tmp_path, "none", "seed0", "result.json"))
    generalization.run(cfg, str(tmp_path))
    assert os.path.getmtime(os.path.join(tmp_path, "none", "seed0", "result.json")) == stamp
