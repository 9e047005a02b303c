"""The expert-feedback experiment (rlx/feedback/experiment.py): a simulated expert's preferences
over warm-start episodes -> a Bradley–Terry reward model -> RL on it, against RL on the rule
reward, both measured by the expert's hidden criterion.

    python -m experiments.expert_feedback --workdir=runs/expert_feedback
    python -m experiments.expert_feedback --config=configs/expert_feedback.py:quick --workdir=/tmp/ef

`base` is the main job's config (`configs/toolcalc_grpo.py`) with the forbidden answer-revealing
tool listed, so the expert has hacking to flag; its `rewards` are the rule reward the collected
episodes are scored with (which orders the pairs shown first). Arg flags: `quick` (CI: a few
episodes, pairs and steps).
"""

from __future__ import annotations

import ml_collections

from configs import common, toolcalc_grpo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, quick=False)
    c = ml_collections.ConfigDict()
    c.base = toolcalc_grpo.get_config("quick" if a.quick else None)
    c.base.unlock()
    c.base.env.hackable = True          # list the forbidden tool: the expert flags its use
    c.base.rewards = ml_collections.ConfigDict(dict(correct=1.0))
    c.base.eval.update(every=0 if a.quick else 6, num_episodes=16 if a.quick else 128,
                       pass_k=0, pass_k_tasks=0, print_episodes=0)
    # Warm-start episodes at temperature 1: `tasks` tasks x `samples` samples (one task's samples
    # are the rows a pair is drawn from).
    c.collect = ml_collections.ConfigDict(dict(tasks=8 if a.quick else 96,
                                               samples=4 if a.quick else 8, temperature=1.0,
                                               seed=7))
    # The simulated expert: its hidden criterion is rlx.feedback.expert.GOLD_WEIGHTS.
    c.expert = ml_collections.ConfigDict(dict(pairs=24 if a.quick else 1200, noise=0.1, seed=0))
    c.reward_model = ml_collections.ConfigDict(dict(
        steps=10 if a.quick else 150, batch_size=16, lr=3e-4, heldout=0.2,
        seed=0, eval_every=5 if a.quick else 50))
    c.arms = "preference" if a.quick else "preference+rule"
    c.seeds = 1 if a.quick else 2
    c.lock()
    return c
