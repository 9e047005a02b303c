"""The default experiment: GRPO on `toolcalc` (1-2 calculator calls per task) under tool-scaffold
perturbation, from a warm-start checkpoint, evaluated on train-scaffold and held-out-scaffold sets.

    python -m experiments.train --config=configs/toolcalc_grpo.py --workdir=/tmp/rlx
    python -m experiments.train --config=configs/toolcalc_grpo.py:quick --workdir=/tmp/q
    python -m experiments.train --config=configs/toolcalc_grpo.py:scratch,model=small,mesh=2x2x2 \
        --config.rollout.head_dtype=bfloat16 --workdir=...

The warm start is `rlx/assets/toolcalc_tiny_sft`: the `tiny` model after supervised training on
oracle demonstrations (`configs/toolcalc_sft.py`, about 45 minutes on 2 CPU cores, exported with
`experiments/export_hf.py`). A 1M-parameter model needs a few thousand SFT steps before it copies
operands and tool results reliably, which does not fit the 15-minute budget of the main job, so
the main job starts from that checkpoint the way RL post-training starts from a pretrained model.
`scratch` starts from random weights instead and runs `sft.steps` of SFT first.

Arg flags (comma-separated): `quick` (a CPU smoke run of a few steps), `scratch`,
`model=<preset>` (other presets imply `scratch`), `mesh=DxFxT`, `loss=ppo|gspo|cispo`,
`advantage=grpo|drgrpo|rloo|gae|reinforce_pp`, `axes=<preset of rlx.envs.scaffold.AXIS_PRESETS>`
(the axes that vary in training and in the held-out set).
"""

from __future__ import annotations

import os

import ml_collections

import rlx
from configs import common
from rlx.train.optim import optim_section

WARMSTART = os.path.join(os.path.dirname(rlx.__file__), "assets", "toolcalc_tiny_sft")

# Each loss with its own published defaults (clip range, aggregation).
LOSS_DEFAULTS = {
    "ppo": dict(clip_low=0.2, clip_high=0.28, clip_c=3.0, loss_agg_mode="token-mean"),
    # GSPO's sequence ratios sit within ~1e-3 of 1: the paper's clip range and aggregation.
    "gspo": dict(clip_low=3e-4, clip_high=4e-4, clip_c=0.0, loss_agg_mode="seq-mean-token-mean"),
    # M1 bounds the IS weight only from above (clip_low=1: no lower bound).
    "cispo": dict(clip_low=1.0, clip_high=0.2, clip_c=0.0, loss_agg_mode="token-mean"),
}
# Row length (prompt + up to 4 rounds) by the axes that vary: the prompts of `all_axes` scaffolds
# reach ~220 tokens, `tools_only` episodes stay under 256.
MAX_LEN = {"tools_only": 256, "none": 256}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, quick=False, scratch=False, model="tiny", mesh="-1x1x1",
                         loss="ppo", advantage="grpo", axes="tools_only")
    scratch = a.scratch or a.model != "tiny"
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = common.model_section(a.model)
    # A Hugging Face directory to start from ("" = random init from `model`).
    c.init = ml_collections.ConfigDict(dict(hf_path="" if scratch else WARMSTART))
    c.mesh = common.mesh_section(a.mesh)

    c.env = ml_collections.ConfigDict(dict(
        name="toolcalc", num_steps=2, min_steps=1, max_operand=9, fault_rate=0.0,
        hackable=False, max_steps=2,
        train_axes=a.axes,  # which scaffold axes vary (train variants) in training episodes
        eval_axes=a.axes,   # which axes take their held-out variants in the held-out set
    ))

    # Rows hold the prompt and up to 4 rounds; tools_only oracle episodes are <= 250 tokens.
    max_len = MAX_LEN.get(a.axes, 384)
    c.rollout = common.rollout_section(temperature=1.0, max_new_tokens=48, max_rounds=4,
                                       max_len=max_len)
    # 16 tasks x 8 samples: the warm-start policy is peaked (entropy ~0.1 nat/token), so groups
    # need several samples to differ, and batches several tasks to be representative.
    c.rollout.batch_size = 128
    c.rollout.group_size = 8

    # Supervised warm start on oracle demonstrations (fresh ones every step). The recipe of the
    # shipped warm-start checkpoint; 0 steps when starting from it.
    c.sft = ml_collections.ConfigDict(dict(
        steps=1500 if scratch else 0, batch_size=32, max_rounds=4, max_len=max_len,
        optim=optim_section(lr=6e-3, b2=0.98, warmup_steps=50, schedule="cosine",
                            decay_steps=1450, final_lr_frac=0.05)))

    c.rl = ml_collections.ConfigDict(dict(
        steps=40, advantage=a.advantage, advantage_kwargs=ml_collections.ConfigDict(),
        loss=a.loss, **LOSS_DEFAULTS.get(a.loss, LOSS_DEFAULTS["ppo"]), horizon=0, epochs=1,
        num_minibatches=2,
        temperature=c.rollout.get_ref("temperature"),
        kl_coef=0.0, kl_reward_coef=0.0, kl_estimator="k3", entropy_coef=0.0,
        value_clip=0.5, chunk_size=512, old_logprobs="trainer", dynamic_sampling=False,
        correction=ml_collections.ConfigDict(dict(mode="none", level="token", threshold=2.0)),
    ))
    # MiniMax-M1's AdamW settings for RL (b2=0.95, eps=1e-15).
    # lr 1e-3 cost 12 points of train-scaffold success in 40 steps; 1e-4 keeps the warm start.
    c.optim = optim_section(lr=1e-4, b1=0.9, b2=0.95, eps=1e-15, grad_clip=1.0)
    c.critic_optim = optim_section(lr=1e-3)

    # Reward components and weights (rlx.rewards registry names).
    c.rewards = ml_collections.ConfigDict(dict(correct=1.0, format=0.1, forbidden_tool=1.0))

    c.eval = ml_collections.ConfigDict(dict(every=10, num_episodes=128, temperature=0.0, seed=1234,
                                            print_episodes=3))
    c.checkpoint = ml_collections.ConfigDict(dict(every=20, keep=2))

    if a.quick:
        c.sft.steps, c.sft.batch_size = (20 if scratch else 0), 16
        c.sft.optim.decay_steps, c.sft.optim.warmup_steps = 20, 2
        c.rl.steps, c.rollout.batch_size, c.rollout.group_size = 3, 16, 4
        c.eval.every, c.eval.num_episodes = 2, 16
        c.checkpoint.every = 2
    c.lock()
    return c
