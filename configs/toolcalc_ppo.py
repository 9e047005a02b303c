"""PPO with a critic (GAE advantages) on toolcalc; otherwise the default experiment.

    python -m experiments.train --config=configs/toolcalc_ppo.py --workdir=/tmp/rlx_ppo

Accepts the same arg flags as configs/toolcalc_grpo.py (e.g. `:quick`).
"""

from __future__ import annotations

import ml_collections

from configs import toolcalc_grpo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = toolcalc_grpo.get_config(arg)
    c.unlock()
    c.rl.advantage = "gae"
    c.rl.advantage_kwargs = ml_collections.ConfigDict(dict(gamma=1.0, lam=0.95, whiten=True))
    c.rl.loss = "ppo"
    c.rl.epochs = 2
    # A critic needs no groups; keep G tasks of the batch distinct.
    c.rollout.group_size = 1
    c.lock()
    return c
