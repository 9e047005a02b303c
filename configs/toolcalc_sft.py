"""Supervised warm start: the recipe of the shipped `rlx/assets/toolcalc_warmstart`.

    python -m experiments.train --config=configs/toolcalc_sft.py --workdir=runs/warmstart
    python -m experiments.export_hf --workdir=runs/warmstart --out=rlx/assets/toolcalc_warmstart

The tiny model from random weights, trained on oracle demonstrations of toolcalc (1-2 calls) on
procedural train scaffolds, mixed per batch (`sft.mixture`, see rlx/train/demos.py):
  names      only the tool names vary: the first thing to learn is to copy a name from the list;
  tools_only names, descriptions and order vary: the name must be found by its description;
  all_axes   every axis varies (call syntax, prompts, chat template, formats, faults);
  copy       random token sequences repeated once: the induction skill behind copying.
It is evaluated greedily on the frozen all-axes train and held-out sets every `sft.eval_every`
steps. Resumable (orbax checkpoints every `checkpoint.every` steps). Arg flags: `quick`,
`steps=N`, `canonical` (canonical-scaffold demos and the copy corpus only).
"""

from __future__ import annotations

import ml_collections

from configs import common, toolcalc_grpo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, quick=False, steps=2100, canonical=False)
    c = toolcalc_grpo.get_config("scratch,quick" if a.quick else "scratch")
    c.unlock()
    c.rl.steps = 0
    c.sft.steps = 20 if a.quick else a.steps
    c.sft.batch_size = 16
    # `canonical`: the same budget on the canonical scaffold only (plus the copy corpus): a
    # starting point that has not seen the variation the generalization arms differ in.
    c.sft.mixture = ("none:5,copy:1" if a.canonical
                     else "tool_names:1,tools_only:1,all_axes:3,copy:1")
    c.sft.max_len = 384      # the longest demos (retried faults) are cut; RL rows stay 512
    c.sft.eval_every = 10 if a.quick else 300
    c.sft.optim.decay_steps = c.sft.steps
    c.sft.optim.warmup_steps = 2 if a.quick else 100
    c.sft.optim.lr = 2e-3
    c.eval.num_episodes = 16 if a.quick else 256
    c.checkpoint.every, c.checkpoint.keep = (10, 2) if a.quick else (300, 3)
    c.lock()
    return c
