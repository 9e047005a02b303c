"""The default experiment: GRPO on `toolcalc` (1-2 calculator calls per task) on procedural
scaffolds (every axis varies), from a warm-start checkpoint, evaluated greedily on 512 frozen
train-scaffold and 512 held-out-scaffold episodes, with pass@8 before and after RL.

    python -m experiments.train --workdir=runs/default
    python -m experiments.train --workdir=runs/default_seed1 --config.seed=1
    python -m experiments.train --config=configs/toolcalc_grpo.py:quick --workdir=/tmp/q
    python -m experiments.train --config=configs/toolcalc_grpo.py:scratch,model=small,mesh=2x2x2 \
        --config.rollout.head_dtype=bfloat16 --workdir=...

The warm start is `rlx/assets/toolcalc_warmstart`: the `tiny` model after the supervised stage
of `configs/toolcalc_sft.py` (oracle demonstrations on procedural train scaffolds and a copy
corpus; docs/RESULTS.md has its recipe, time and figures). The main job starts from it the way
RL post-training starts from a pretrained model; `scratch` starts from random weights and runs
`sft.steps` of SFT first. `summary.json` holds `warm_start` and `final` dicts with
`train/success`, `heldout/success` (greedy) and `train/pass@8`, `heldout/pass@8`,
`{split}/pass@1` (8 samples per task at temperature 1).

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

WARMSTART = os.path.join(os.path.dirname(rlx.__file__), "assets", "toolcalc_warmstart")

# Each loss with its own published defaults (clip range, aggregation).
LOSS_DEFAULTS = {
    "ppo": dict(clip_low=0.2, clip_high=0.28, clip_c=3.0, loss_agg_mode="token-mean"),
    # GSPO's sequence ratios sit within ~1e-3 of 1: the paper's clip range and aggregation.
    "gspo": dict(clip_low=3e-4, clip_high=4e-4, clip_c=0.0, loss_agg_mode="seq-mean-token-mean"),
    # M1 bounds the IS weight only from above (clip_low=1: no lower bound).
    "cispo": dict(clip_low=1.0, clip_high=0.2, clip_c=0.0, loss_agg_mode="token-mean"),
}
# Row length: procedural prompts reach ~220 tokens, a call round ~60 (call and tool turn), and
# faults add retries.
MAX_LEN = 512


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, quick=False, scratch=False, model="tiny", mesh="-1x1x1",
                         loss="ppo", advantage="grpo", axes="all_axes")
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

    max_len = MAX_LEN
    c.rollout = common.rollout_section(temperature=1.0, max_new_tokens=48, max_rounds=6,
                                       max_len=max_len)
    # 8 tasks x 8 samples: groups need several samples to differ; rows of up to 512 tokens make
    # an update cost ~15 s on 2 cores, so the main job's 15 minutes hold ~24 steps of 64.
    c.rollout.batch_size = 64
    c.rollout.group_size = 8

    # Supervised warm start on oracle demonstrations (fresh ones every step). The recipe of the
    # shipped warm-start checkpoint; 0 steps when starting from it.
    c.sft = ml_collections.ConfigDict(dict(
        steps=1500 if scratch else 0, batch_size=32, max_rounds=6, max_len=max_len,
        mixture="",      # "" = env.train_axes only; see rlx/train/demos.py
        eval_every=0,    # greedy evaluation on the frozen sets every N steps (0: at the end)
        optim=optim_section(lr=6e-3, b2=0.98, warmup_steps=50, schedule="cosine",
                            decay_steps=1450, final_lr_frac=0.05)))

    c.rl = ml_collections.ConfigDict(dict(
        steps=24, advantage=a.advantage, advantage_kwargs=ml_collections.ConfigDict(),
        loss=a.loss, **LOSS_DEFAULTS.get(a.loss, LOSS_DEFAULTS["ppo"]), horizon=0, epochs=1,
        num_minibatches=2,
        temperature=c.rollout.get_ref("temperature"),
        kl_coef=0.0, kl_reward_coef=0.0, kl_estimator="k3", entropy_coef=0.0,
        value_clip=0.5, chunk_size=512, old_logprobs="trainer", dynamic_sampling=False,
        correction=ml_collections.ConfigDict(dict(mode="none", level="token", threshold=2.0)),
    ))
    # MiniMax-M1's AdamW settings for RL (b2=0.95, eps=1e-15). From the stage-3 warm start,
    # lr 3e-4 drifted 1 nat of KL from it within 6 steps and RL lost tool use (train greedy
    # success 0.150 -> 0.012); 5e-5 keeps the KL near 0.02 (docs/RESULTS.md, "The main job").
    c.optim = optim_section(lr=5e-5, b1=0.9, b2=0.95, eps=1e-15, grad_clip=1.0)
    c.critic_optim = optim_section(lr=1e-3)

    # Reward components and weights (rlx.rewards registry names). `format` is logged, not paid:
    # at 0.1 the main job learned to answer at once (a well-formed guess earns it every time)
    # instead of calling tools (docs/RESULTS.md, the main job from the stage-2 warm start).
    c.rewards = ml_collections.ConfigDict(dict(correct=1.0, format=0.0, forbidden_tool=1.0))

    # 512 frozen episodes per set (±2 points of noise at success 0.5); pass@8 at temperature 1
    # on the first 64 tasks of each set (512 episodes) before and after RL (the headroom RL can
    # turn into pass@1; 8 x 512 samples would take most of the main job's time).
    # `heldout_sets`: extra held-out sets, name -> axes held out (the rest canonical).
    # `print_episodes`: greedy episodes per set decoded into TensorBoard text at each evaluation.
    c.eval = ml_collections.ConfigDict(dict(every=0, num_episodes=512, temperature=0.0, seed=1234,
                                            print_episodes=3, pass_k=8, pass_k_tasks=64,
                                            heldout_sets={}))
    c.checkpoint = ml_collections.ConfigDict(dict(every=20, keep=2))

    if a.quick:   # about a minute on 2 cores, most of it compiling: 2 RL steps of 16 episodes
        c.sft.steps, c.sft.batch_size = (20 if scratch else 0), 16
        c.sft.optim.decay_steps, c.sft.optim.warmup_steps = 20, 2
        c.rl.steps, c.rollout.batch_size, c.rollout.group_size = 2, 16, 4
        c.rollout.max_rounds = 3   # short rows: both steps fit one row-width bucket, one compile
        # Greedy evaluation before and after RL only (pass@k would compile a second program).
        c.eval.every, c.eval.num_episodes, c.eval.pass_k, c.eval.pass_k_tasks = 0, 16, 0, 0
        c.checkpoint.every = 2
    c.lock()
    return c
