"""CISPO (MiniMax-M1) on toolcalc: the clipped importance weight is stop-gradiented and
multiplies advantage x log-prob, so no token loses its gradient; otherwise the default.

    python -m experiments.train --config=configs/toolcalc_cispo.py --workdir=/tmp/rlx_cispo

Accepts the same arg flags as configs/toolcalc_grpo.py (e.g. `:quick`).
"""

from __future__ import annotations

import ml_collections

from configs import toolcalc_grpo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    # LOSS_DEFAULTS["cispo"]: M1 bounds the IS weight only from above; no KL term.
    c = toolcalc_grpo.get_config(",".join(filter(None, [arg, "loss=cispo"])))
    c.unlock()
    c.rl.epochs = 2
    c.lock()
    return c
