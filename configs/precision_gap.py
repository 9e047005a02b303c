"""Finding E1, where precision is lost (MiniMax-M1, Fig. 3): the trainer's and the sampler's
probabilities of the tokens the sampler draws, for sampler precision settings of one model.

    python -m experiments.precision_gap                                   # ~5 minutes on 2 cores
    python -m experiments.precision_gap --config=configs/precision_gap.py:quick --out=/tmp/pg
    python -m experiments.precision_gap --config=configs/precision_gap.py:checkpoint=<HF dir>

The trainer is the model in float32 throughout; every entry of `variants` is a sampler setting
(the precision fields it changes). Contexts are oracle tool-use episodes of `toolcalc` with every
scaffold axis varying (rlx/train/demos.py), and the sampler draws a token at each position where
the policy acts in them. `temperatures` sweeps the logit scale on the checkpoint (logits / T; the
first is the headline, shown in the scatter and the table); `vocab_sweep` probes random-init
models of one width at several vocabulary sizes, sharpened by its temperature so that their
next-token distributions are peaked like a trained model's.

Arg flags (comma-separated): `quick` (a CI smoke run of a few seconds), `seeds=N` (contexts,
sampling and random inits per seed), `checkpoint=<HF dir>` (default: the shipped warm start).
"""

from __future__ import annotations

import ml_collections

from configs import common, toolcalc_grpo
from rlx.diagnostics import precision_variants

# The sampler in the trainer's own precision: its figures must show no gap at all.
CONTROL = "fp32 body / fp32 head"
BF16_HEAD = "bf16 body / bf16 head"
FP32_HEAD = "bf16 body / fp32 head"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, quick=False, seeds=3, checkpoint="")
    c = ml_collections.ConfigDict()
    c.checkpoint = a.checkpoint or toolcalc_grpo.WARMSTART
    c.seeds = 1 if a.quick else a.seeds
    # The main job's env (configs/toolcalc_grpo.py); its episodes, played by the oracle, are the
    # contexts: `rows` per seed (rlx.envs.make arguments besides `name`).
    c.env = ml_collections.ConfigDict(dict(name="toolcalc", axes="all_axes", num_steps=2,
                                           min_steps=1, max_operand=9, max_steps=2))
    c.contexts = ml_collections.ConfigDict(dict(rows=32, max_len=512, max_rounds=6))
    c.variants = ml_collections.ConfigDict({CONTROL: {}, **precision_variants()})
    # The two panels of M1's Fig. 3: a bf16 LM head and an fp32 one, the body in bf16.
    c.scatter_variants = (BF16_HEAD, FP32_HEAD)
    c.temperatures = (1.0, 0.5, 0.25)
    c.vocab_sweep = ml_collections.ConfigDict(dict(
        model="tiny", vocab_sizes=(1024, 8192, 32768), temperature=0.05, rows=8, length=128))

    if a.quick:
        c.contexts.rows, c.contexts.max_len = 4, 384
        c.variants = ml_collections.ConfigDict(
            {name: c.variants[name] for name in (CONTROL, BF16_HEAD, FP32_HEAD)})
        c.temperatures = (1.0,)
        c.vocab_sweep.vocab_sizes, c.vocab_sweep.rows, c.vocab_sweep.length = (256,), 2, 32
    if c.seeds < 1:
        raise ValueError(f"config arg seeds={c.seeds} is not allowed; allowed: seeds >= 1")
    c.lock()
    return c
