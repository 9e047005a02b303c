"""The generalization experiment: arm definitions and configs, config errors, and the `:quick`
variant end to end (the start's evaluation, one arm of two demo steps, the table and the plot, a
rerun that skips finished arms)."""

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
    with pytest.raises(ValueError, match="arms=' \\+ ': unknown \\[\\]"):
        generalization.parse_arms(" + ")


def test_arm_configs_differ_only_in_their_training_axes():
    cfg = gen_config.get_config("sft_steps=150,rl_steps=4,episodes=64")
    start = generalization.arm_config(cfg, generalization.START, 0)
    assert start.sft.steps == 0 and start.rl.steps == 0 and start.env.train_axes == "none"
    runs = {arm: generalization.arm_config(cfg, arm, 2) for arm in generalization.all_arms()}
    for arm, run_cfg in runs.items():
        axes = generalization.arm_axes(arm)
        assert run_cfg.env.train_axes == axes
        assert run_cfg.sft.mixture == cfg.mixture.format(axes=axes)
        assert (run_cfg.seed, run_cfg.sft.steps, run_cfg.rl.steps) == (2, 150, 4)
        assert run_cfg.init.hf_path == start.init.hf_path == gen_config.CANONICAL
        # Every arm is evaluated on the same sets: all axes held out, and each group alone.
        assert run_cfg.env.eval_axes == "all_axes" and run_cfg.eval.num_episodes == 64
        assert dict(run_cfg.eval.heldout_sets) == {
            g: "+".join(axes) for g, axes in AXIS_GROUPS.items()}
        others = {k: v for k, v in run_cfg.to_dict().items() if k not in ("env", "sft", "seed")}
        first = runs["none"].to_dict()
        assert others == {k: v for k, v in first.items() if k not in ("env", "sft", "seed")}


def test_quick_run_writes_table_plot_and_skips_finished_arms(tmp_path):
    cfg = gen_config.get_config("quick")
    out = generalization.run(cfg, str(tmp_path))
    assert set(out["results"]) == {"all_axes"}
    for run_dir in ("start", "all_axes/seed0"):
        with open(os.path.join(tmp_path, run_dir, "result.json")) as f:
            result = json.load(f)
        assert set(result) == set(generalization.eval_sets()) | {"train"}
        assert all(0.0 <= v <= 1.0 for v in result.values())
    with open(os.path.join(tmp_path, "all_axes", "seed0", "config.json")) as f:
        run_cfg = json.load(f)
    assert run_cfg["env"]["train_axes"] == "all_axes" and run_cfg["sft"]["steps"] == 2
    assert os.path.getsize(os.path.join(tmp_path, "generalization.png")) > 10_000
    table = open(os.path.join(tmp_path, "results.md")).read()
    assert "| all_axes |" in table and "| start |" in table and "held-out all" in table
    # A rerun reads the finished arms instead of training them again.
    stamp = os.path.getmtime(os.path.join(tmp_path, "all_axes", "seed0", "result.json"))
    generalization.run(cfg, str(tmp_path))
    assert os.path.getmtime(os.path.join(tmp_path, "all_axes", "seed0", "result.json")) == stamp
