"""The scaffold-generalization experiment: RL arms that vary different scaffold axes, from one
starting checkpoint at one budget, evaluated on held-out scaffolds (rlx/train/generalization.py).

    python -m experiments.generalization --workdir=runs/generalization
    python -m experiments.generalization --config=configs/generalization.py:quick --workdir=/tmp/g
    python -m experiments.generalization \
        --config=configs/generalization.py:warmstart=runs/canonical_ws/export --workdir=...

`base` is the main job's config (configs/toolcalc_grpo.py); each arm overrides
`env.train_axes` and the seed. Arg flags: `quick` (2 arms x 1 seed, 1 RL step, 16 evaluation
episodes of up to 3 rounds: a CI smoke run), `seeds=N`, `arms=a+b+...` (names in `generalization.all_arms()`),
`warmstart=<HF dir>` (the common starting point; by default the shipped warm start, which was
itself trained on all axes: see docs/RESULTS.md for why a fair comparison starts from
`configs/toolcalc_sft.py:canonical` instead).
"""

from __future__ import annotations

import ml_collections

from configs import common, toolcalc_grpo
from rlx.train import generalization


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, quick=False, seeds=3, arms="+".join(generalization.all_arms()),
                         warmstart="")
    c = ml_collections.ConfigDict()
    base = toolcalc_grpo.get_config("quick" if a.quick else None)
    base.unlock()
    if a.warmstart:
        base.init.hf_path = a.warmstart
    if a.quick:   # a smoke run: episodes of up to 3 rounds (a call, a call, the answer)
        base.rl.steps, base.eval.num_episodes, base.eval.pass_k = 1, 16, 0
        base.rollout.max_rounds = 3
    c.base = base
    c.arms = "none+all_axes" if a.quick else a.arms
    c.seeds = 1 if a.quick else a.seeds
    generalization._parse_list(c.arms, generalization.all_arms(), "arms")
    c.lock()
    return c
