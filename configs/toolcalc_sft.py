"""Supervised warm start: the recipe of the shipped `rlx/assets/toolcalc_warmstart` (three stages).

    python -m experiments.train --config=configs/toolcalc_sft.py --workdir=runs/warmstart
    python -m experiments.export_hf --workdir=runs/warmstart \
        --out=rlx/assets/toolcalc_warmstart_stage1
    python -m experiments.train --config=configs/toolcalc_sft.py:stage2 --workdir=runs/ws2
    python -m experiments.export_hf --workdir=runs/ws2 --out=rlx/assets/toolcalc_warmstart_stage2
    python -m experiments.train --config=configs/toolcalc_sft.py:stage3 --workdir=runs/ws3
    python -m experiments.export_hf --workdir=runs/ws3 --out=rlx/assets/toolcalc_warmstart
    python -m experiments.train --config=configs/toolcalc_sft.py:stage4 --workdir=runs/ws4
    python -m experiments.export_hf --workdir=runs/ws4 --out=rlx/assets/toolcalc_warmstart_stage4
    python -m experiments.train --config=configs/toolcalc_sft.py:canonical --workdir=runs/canon
    python -m experiments.export_hf --workdir=runs/canon --out=rlx/assets/toolcalc_canonical

The tiny model from random weights. First `copy_steps` steps on the copy corpus alone (rows
packed with short random sequences, each repeated once: the induction skill behind copying a
name or a number from the context), then oracle demonstrations of toolcalc (1-2 calls) on
procedural train scaffolds, mixed per batch with the copy corpus (`sft.mixture`, see
rlx/train/demos.py):
  tool_names  only the tool names vary: copy a name from the list;
  tools_only  names, descriptions and order vary: find the name by its description;
  all_axes    every axis varies (call syntax, prompts, chat template, formats, faults);
  copy        the copy corpus, kept in so the skill stays.
It is evaluated greedily on 128 frozen all-axes train and held-out episodes every
`sft.eval_every` steps. Resumable (orbax checkpoints every `checkpoint.every` steps). Arg flags:
`quick`, `steps=N`, `copy_steps=N`, `canonical` (see below), `stage2` and `stage3` (see below),
`init=<Hugging Face dir>` (the checkpoint they start from).

`canonical` is the common starting point of the scaffold-generalization arms
(configs/generalization.py): from random weights, the copy corpus, then the recall corpus and
oracle demos on the canonical scaffold only, so it has read contexts but never seen the scaffold
variation the arms differ in. Its "train" evaluation set is the canonical scaffold; held out
stays all axes. Shipped as `rlx/assets/toolcalc_canonical` (52 min on 2 cores).

`stage2` continues a finished first stage (by default `rlx/assets/toolcalc_warmstart_stage1`)
for `steps` (default 2000) more steps at lr 1e-3 (cosine), adding the `recall` corpus (lookup
lists of random ids: find an entry by its one-id description, copy its name) to the mixture.
`stage3` continues stage 2 (by default `rlx/assets/toolcalc_warmstart_stage2`) for `steps`
(default 1500) at lr 1e-3 on scaffolds whose copy targets cannot be memorized: tool names from
the hundreds of letter-run pieces of the tokenizer and call-syntax keys drawn per episode
(`rlx/envs/scaffold/axes.py`), with name-only demos weighted up. Stages 1 and 2 ran when names
came from 60 syllables and keys from short lists (commit 996cea2 and earlier).
`stage4` continues stage 3 (by default the shipped `rlx/assets/toolcalc_warmstart`) for 1500
steps at lr 1e-3, adding the `glossary` corpus (styled names from every atom of both splits,
found by a description in words, in a format of its own; rlx/train/demos.py) as 3/11 of the rows;
shipped as `rlx/assets/toolcalc_warmstart_stage4`, not yet the main job's default.
What each stage reaches is in docs/RESULTS.md ("Warm start");
rlx/assets/toolcalc_warmstart/metrics.json holds the last stage's curve.
"""

from __future__ import annotations

import os

import ml_collections

from configs import common, toolcalc_grpo

STAGE1 = os.path.join(os.path.dirname(toolcalc_grpo.WARMSTART), "toolcalc_warmstart_stage1")
STAGE2 = os.path.join(os.path.dirname(toolcalc_grpo.WARMSTART), "toolcalc_warmstart_stage2")
STAGE3 = toolcalc_grpo.WARMSTART      # the shipped warm start is stage 3
STAGES = ("stage2", "stage3", "stage4")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, quick=False, steps=0, copy_steps=400, canonical=False,
                         init="", **dict.fromkeys(STAGES, False))
    later = [s for s in STAGES if a[s]]
    if len(later) > 1:
        raise ValueError(f"config args {' and '.join(later)} do not combine: pick one stage")
    if a.init and not later:
        raise ValueError(f"config arg init={a.init!r} is for {', '.join(STAGES)} only (stage 1 "
                         f"starts from random weights)")
    if later and a.canonical:
        raise ValueError(f"config args {later[0]} and canonical do not combine: the later "
                         f"stages continue the all-axes recipe")
    c = toolcalc_grpo.get_config("scratch,quick" if a.quick else "scratch")
    c.unlock()
    c.rl.steps = 0
    c.sft.steps = 20 if a.quick else (a.steps or (2000 if a.stage2 else 1500))
    c.sft.batch_size = 16
    # First the copy corpus alone (the induction skill every reading task needs), then oracle
    # demos mixed over scaffold-axis sets with the copy corpus kept in. `canonical`: the same
    # budget on the canonical scaffold only, a starting point that has not seen the variation
    # the generalization arms differ in.
    demos = ("recall:2,none:5,copy:1" if a.canonical
             else "tool_names:1,tools_only:1,all_axes:3,copy:1")
    copy_steps = 5 if a.quick else a.copy_steps
    c.sft.mixture = f"copy:1@{copy_steps};{demos}" if copy_steps else demos
    if a.stage2:
        c.init.hf_path = a.init or STAGE1
        c.sft.mixture = "recall:3,tool_names:1,tools_only:2,all_axes:3,copy:1"
    if a.stage3:
        c.init.hf_path = a.init or STAGE2
        c.sft.mixture = "recall:2,tool_names:2,tools_only:2,all_axes:3,copy:1"
    if a.stage4:
        c.init.hf_path = a.init or STAGE3
        c.sft.mixture = "glossary:3,recall:1,tool_names:1,tools_only:2,all_axes:3,copy:1"
    if a.canonical:   # its "train" evaluation set is the canonical scaffold it learns
        c.env.train_axes = "none"
    c.sft.max_len = 384      # the longest demos (retried faults) are cut; RL rows stay 512
    c.sft.eval_every = 10 if a.quick else 300
    c.sft.optim.decay_steps = c.sft.steps
    c.sft.optim.warmup_steps = 2 if a.quick else 50
    c.sft.optim.lr = 1e-3 if later else 3e-3
    c.eval.num_episodes = 16 if a.quick else 128
    c.checkpoint.every, c.checkpoint.keep = (10, 2) if a.quick else (300, 3)
    if later and not a.quick:
        c.sft.eval_every, c.checkpoint.every = 500, 250
    c.lock()
    return c
