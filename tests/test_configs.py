"""Every experiment config loads, validates and builds its run (no compilation). Command-line
overrides (`--config.a.b=...`) are exercised end to end in tests/train/test_loop.py."""

import os

import pytest

from configs import generalization, toolcalc_cispo, toolcalc_grpo, toolcalc_ppo, toolcalc_sft
from rlx.train import generalization as gen_lib
from rlx.train import setup as setup_lib


@pytest.mark.parametrize("module,arg", [
    (toolcalc_grpo, None), (toolcalc_grpo, "quick"), (toolcalc_grpo, "scratch,axes=all_axes"),
    (toolcalc_grpo, "loss=gspo"), (toolcalc_ppo, None), (toolcalc_cispo, None),
    (toolcalc_sft, None), (toolcalc_sft, "canonical"), (toolcalc_sft, "quick"),
    (toolcalc_sft, "stage2"), (toolcalc_sft, "stage3"),
])
def test_configs_build(module, arg):
    c = module.get_config(arg)
    s = setup_lib.build(c)
    assert s.policy.cfg.vocab_size >= s.tokenizer.vocab_size
    assert (s.critic is not None) == (c.rl.advantage == "gae")
    assert s.env.max_prompt_len < c.rollout.max_len


def test_generalization_arms_build():
    c = generalization.get_config()
    for arm in c.arms.split("+"):
        arm_cfg = gen_lib.arm_config(c, arm, seed=2)
        assert arm_cfg.seed == 2 and arm_cfg.env.eval_axes == "all_axes"
        setup_lib.validate(arm_cfg)


def test_default_config_starts_from_the_shipped_warm_start():
    c = toolcalc_grpo.get_config()
    assert os.path.exists(os.path.join(c.init.hf_path, "config.json"))
    assert os.path.exists(os.path.join(c.init.hf_path, "model.safetensors"))
    assert c.sft.steps == 0 and c.rl.steps > 0


def test_loss_defaults_follow_the_loss():
    gspo = toolcalc_grpo.get_config("loss=gspo").rl
    assert (gspo.clip_low, gspo.clip_high, gspo.loss_agg_mode) == (3e-4, 4e-4,
                                                                   "seq-mean-token-mean")
    cispo = toolcalc_cispo.get_config().rl
    assert (cispo.loss, cispo.clip_low, cispo.clip_high) == ("cispo", 1.0, 0.2)


@pytest.mark.parametrize("arg,match", [("quik", r"config arg 'quik' is unknown; known: \["),
                                       ("mesh=2by2", r"mesh='2by2': expected DATAxFSDPxTENSOR"),
                                       ("model=huge", r"preset 'huge' is unknown")])
def test_bad_config_args_name_the_key(arg, match):
    with pytest.raises(ValueError, match=match):
        toolcalc_grpo.get_config(arg)


@pytest.mark.parametrize("arg,match", [
    ("init=/x", r"init='/x' is for stage2, stage3, stage4 only"),
    ("stage2,stage3", "stage2 and stage3 do not combine"),
    ("stage3,stage4", "stage3 and stage4 do not combine"),
    ("stage3,canonical", "stage3 and canonical do not combine"),
])
def test_sft_config_refuses_args_that_do_not_combine(arg, match):
    with pytest.raises(ValueError, match=match):
        toolcalc_sft.get_config(arg)
