"""Supervised warm start only: the recipe of the shipped `rlx/assets/toolcalc_tiny_sft`.

    python -m experiments.train --config=configs/toolcalc_sft.py --workdir=runs/sft
    python -m experiments.export_hf --workdir=runs/sft --out=rlx/assets/toolcalc_tiny_sft

The tiny model from random weights, 1500 steps of 32 fresh oracle episodes each (toolcalc with
1-2 calls, tool names/descriptions/order varying over their train variants), then the frozen-set
evaluation. Takes about 45 minutes on 2 CPU cores. Same arg flags as configs/toolcalc_grpo.py.
"""

from __future__ import annotations

import ml_collections

from configs import toolcalc_grpo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = toolcalc_grpo.get_config(",".join(filter(None, ["scratch", arg])))
    c.unlock()
    c.rl.steps = 0
    c.checkpoint.every, c.checkpoint.keep = 250, 10
    c.lock()
    return c
