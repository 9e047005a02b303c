"""The scaffold-generalization experiment: arms that train on different scaffold axes, from one
starting checkpoint at one budget, evaluated on held-out scaffolds (rlx/train/generalization.py).

    python -m experiments.generalization --workdir=runs/generalization
    python -m experiments.generalization --config=configs/generalization.py:quick --workdir=/tmp/g
    python -m experiments.generalization \
        --config=configs/generalization.py:sft_steps=0,rl_steps=24 --workdir=runs/gen_rl_only

The common start is `rlx/assets/toolcalc_canonical` (`configs/toolcalc_sft.py:canonical`): the
copy and recall corpora and oracle demos on the canonical scaffold only, so it has learned to
read a context and to call tools, but has never seen the variation the arms differ in. Each arm
then trains `sft_steps` on oracle demos of its own axes (train split; `mixture`, with `{axes}`
the arm's axes), and `rl_steps` of the main job's GRPO on the same axes. The default budget is
supervised only: at this model size RL moves held-out success by less than the noise
(docs/RESULTS.md, "The main job"), so RL-only arms from a start with no held-out success cannot
separate; `rl_steps` is there for a larger model.

`base` is the main job's config (configs/toolcalc_grpo.py). Arg flags: `quick` (the start and
one arm x 1 seed, 2 demo steps, 16 evaluation episodes of up to 3 rounds: a CI smoke run), `seeds=N`,
`arms=a+b+...` (names in `generalization.all_arms()`), `warmstart=<HF dir>` (the common start),
`sft_steps=N`, `rl_steps=N`, `episodes=N` (greedy episodes per evaluation set; 6 sets).
"""

from __future__ import annotations

import os

import ml_collections

from configs import common, toolcalc_grpo
from rlx.train import demos, generalization

CANONICAL = os.path.join(os.path.dirname(toolcalc_grpo.WARMSTART), "toolcalc_canonical")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, quick=False, seeds=3, arms="+".join(generalization.all_arms()),
                         warmstart="", sft_steps=200, rl_steps=0, episodes=256)
    c = ml_collections.ConfigDict()
    base = toolcalc_grpo.get_config("quick" if a.quick else None)
    base.unlock()
    base.init.hf_path = a.warmstart or CANONICAL
    steps = 2 if a.quick else a.sft_steps
    base.sft.steps, base.sft.batch_size, base.sft.max_len = steps, 16, 384
    base.sft.optim.lr, base.sft.optim.warmup_steps = 1e-3, min(20, steps // 10)
    base.sft.optim.decay_steps = max(steps, 1)
    base.rl.steps = 0 if a.quick else a.rl_steps
    base.eval.num_episodes = 16 if a.quick else a.episodes
    base.eval.pass_k = 0
    base.checkpoint.every = 100
    if a.quick:   # a smoke run: episodes of up to 3 rounds (a call, a call, the answer)
        base.rollout.max_rounds = 3
    c.base = base
    # Each arm's demos: its own axes, with the corpora the common start was trained on kept in.
    c.mixture = "{axes}:5,recall:2,copy:1"
    demos.parse_mixture(c.mixture.format(axes="all_axes"))
    c.arms = "all_axes" if a.quick else a.arms
    c.seeds = 1 if a.quick else a.seeds
    generalization.parse_arms(c.arms)
    c.lock()
    return c
