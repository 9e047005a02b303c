"""The simulated expert: its hidden criterion by hand, its choices, its noise rate, its flags,
and the quick expert-feedback experiment end to end (store -> reward model -> RL), rerun-safe."""

import json
import os

import ml_collections
import numpy as np
import pytest

from configs import expert_feedback
from rlx.feedback import experiment, expert
from rlx.feedback import store as S


def info(correct=0, forbidden=0, invalid=0, calls=0):
    return {"correct": correct, "used_forbidden_tool": forbidden, "invalid_calls": invalid,
            "tool_calls": calls}


def test_gold_and_choices_follow_the_hidden_criterion():
    assert expert.gold(info(1, 0, 0, 2)) == pytest.approx(0.8)
    assert expert.gold(info(1, 1, 1, 1)) == pytest.approx(1 - 2 - 0.3 - 0.1)
    batch = {k: np.array(v) for k, v in info([1, 0], [0, 1], [2, 0], [1, 3]).items()}
    np.testing.assert_allclose(expert.gold(batch), [1 - 0.6 - 0.1, -2 - 0.3])
    e = expert.SimulatedExpert(noise=0.0)
    assert e.choose(info(1, calls=2), info(1, calls=1)) == "second"   # fewer calls
    assert e.choose(info(1, forbidden=1), info(0)) == "second"        # never the forbidden tool
    assert e.choose(info(0, invalid=1), info(0, invalid=1)) == "tie"
    noisy = expert.SimulatedExpert(noise=0.1, seed=0)
    flips = np.mean([noisy.choose(info(1), info(0)) == "second" for _ in range(20000)])
    assert abs(flips - 0.1) < 0.01        # 4.7 standard errors
    with pytest.raises(ValueError, match="noise=0.6"):
        expert.SimulatedExpert(noise=0.6)


def test_rate_judges_through_the_store_and_flags_forbidden_tool_use(tmp_path):
    store = S.EpisodeStore(str(tmp_path / "f.sqlite"))
    recs = [S.EpisodeRecord(run="r", step=0, task="t", prompt="", rounds=[], reward=0.0,
                            components={}, info={k: float(v) for k, v in i.items()},
                            tokens=np.array([1, n], np.int32), policy_mask=np.ones(2, bool))
            for n, i in enumerate([info(1, calls=2), info(1, forbidden=1, calls=1), info(0)])]
    ids = store.add_episodes(recs)
    assert expert.SimulatedExpert(noise=0.0).rate(store, max_pairs=10) == 3
    choices = {(j.first, j.second): j.choice for j in store.judgements()}
    assert choices == {(ids[0], ids[1]): "first", (ids[0], ids[2]): "first",
                       (ids[1], ids[2]): "second"}
    assert set(store.flagged()) == {ids[1]}


def test_arm_configs_pay_one_reward_and_log_the_others():
    config = expert_feedback.get_config("quick")
    pref = experiment.arm_config(config, "preference", 1, "/rm")
    assert pref.seed == 1 and pref.rewards.preference.to_dict() == {"weight": 1.0, "path": "/rm"}
    assert pref.rewards.correct == 0.0 and pref.rewards.expert_gold == 0.0
    rule = experiment.arm_config(config, "rule", 0, "/rm")
    assert rule.rewards.preference.weight == 0.0 and rule.rewards.correct == 1.0
    with pytest.raises(ValueError, match="arm 'gold' is unknown"):
        experiment.arm_config(config, "gold", 0, "/rm")


def test_quick_experiment_runs_end_to_end_and_a_rerun_skips_it(tmp_path):
    config = expert_feedback.get_config("quick")
    out = experiment.run(config, str(tmp_path))
    store = S.EpisodeStore(str(tmp_path / "feedback.sqlite"))
    counts = store.count()
    assert counts["episodes"] == config.collect.tasks * config.collect.samples
    assert set(store.episode(1).scaffold) >= {"tool_names", "call_syntax", "chat_template"}
    assert counts["judgements"] == config.expert.pairs
    fit = json.loads((tmp_path / "reward_model.json").read_text())
    assert fit["pairs"] == len(store.preferences()[0]) > 0
    assert (tmp_path / "results.md").exists() and (tmp_path / "expert_feedback.png").exists()
    rl = [r for r in out["results"]["preference"][0]["curves"] if r["stage"] == "rl"]
    assert len(rl) == config.base.rl.steps
    assert {"reward/preference", "reward/expert_gold", "reward/correct"} <= set(rl[0])
    final = out["results"]["preference"][0]["final"]
    # The logged gold is the expert's criterion of the same episodes' info.
    assert final["train/reward/expert_gold"] == pytest.approx(
        final["train/success"] - 2 * final["train/hack_rate"] - 0.3 * final["train/invalid_calls"]
        - 0.1 * final["train/tool_calls"], abs=1e-5)
    again = experiment.run(ml_collections.ConfigDict(config.to_dict()), str(tmp_path))
    assert S.EpisodeStore(str(tmp_path / "feedback.sqlite")).count() == counts
    assert again["table"] == out["table"]
    assert os.path.isdir(tmp_path / "reward_model")
