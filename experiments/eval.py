"""Evaluate a checkpoint of a training workdir (or the parameters a config starts from, e.g. the
warm start) on the frozen train-scaffold and held-out-scaffold sets: success, reward components,
rounds, tool calls, hack rate, success by scaffold variant, and a few decoded episodes; with
`--per_axis`, success on a held-out set per axis.

    python -m experiments.eval --workdir=runs/toolcalc_grpo            # latest checkpoint
    python -m experiments.eval --workdir=runs/toolcalc_grpo --step=300 --examples=5
    python -m experiments.eval --config=configs/toolcalc_grpo.py       # the warm start
    python -m experiments.eval --config=configs/toolcalc_grpo.py --samples=8 --temperature=1

`--samples=K` plays every task K times at `--temperature` and adds pass@K: RL only reinforces
what the policy samples, so pass@K on the held-out set bounds what RL can gain there.
Policy tokens are shown between ⟦ and ⟧; everything else is prompt or environment. Everything
printed is also written as JSON: to `<workdir>/eval[-step<N>].json` with `--workdir`, or to
`--out` (which also works with `--config`).
"""

import json
import math
import os

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from rlx.envs.scaffold import AXES
from rlx.train import cli
from rlx.train.evaluation import (
    evaluate_checkpoint,
    evaluate_heldout_sets,
    initial_params,
    restore_params,
)

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir: evaluate one of its checkpoints.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Instead of --workdir, a config file[:arg]: evaluate the parameters it "
    "starts from (its init.hf_path checkpoint, or its random init).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_EXAMPLES = flags.DEFINE_integer("examples", 3, "Episodes to print per split.")
_SAMPLES = flags.DEFINE_integer("samples", 1, "Samples per task (adds pass@K for K > 1).")
_TEMPERATURE = flags.DEFINE_float("temperature", None,
                                  "Sampling temperature (default: the config's eval.temperature).")
_OUT = flags.DEFINE_string("out", None, "Where to write the results as JSON (default with "
                           "--workdir: <workdir>/eval.json, or eval-step<N>.json for --step).")
_PER_AXIS = flags.DEFINE_bool("per_axis", False, "Also evaluate a held-out set per scaffold "
                              "axis (that axis held out, the others as --per_axis_others).")
_PER_AXIS_OTHERS = flags.DEFINE_enum(
    "per_axis_others", "canonical", ["canonical", "train"],
    "With --per_axis, the axes not held out: canonical, or at their train variants where the "
    "config's env.train_axes varies them (isolates the held-out axis for a policy trained on "
    "perturbed scaffolds).")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if (_WORKDIR.value is None) == (_CONFIG.value is None):
        raise app.UsageError("give exactly one of --workdir and --config")
    metrics, examples = evaluate_checkpoint(_WORKDIR.value, _STEP.value, config=_CONFIG.value,
                                            num_examples=_EXAMPLES.value, samples=_SAMPLES.value,
                                            temperature=_TEMPERATURE.value)
    step = metrics.pop("step")
    print(f"checkpoint step {step}")
    record = {"workdir": _WORKDIR.value, "step": step, "samples": _SAMPLES.value,
              "temperature": metrics.pop("temperature"), "metrics": dict(metrics)}
    by_variant = {k: metrics.pop(k) for k in [k for k in metrics if k.endswith("/by_variant")]}
    for key in sorted(metrics):
        print(f"  {key:32s} {metrics[key]:8.3f}")
    for key, axes in by_variant.items():
        print(f"{key.split('/')[0]} success by scaffold variant:")
        for axis, rows in axes.items():
            for label, (rate, n) in rows.items():
                print(f"  {axis:16s} {label:40s} {rate:6.3f}  (n={n})")
    if _PER_AXIS.value:
        s, params = (initial_params(_CONFIG.value) if _WORKDIR.value is None else
                     restore_params(_WORKDIR.value, _STEP.value)[::2])
        others = _PER_AXIS_OTHERS.value
        per_axis = evaluate_heldout_sets(s, params, {a: a for a in AXES}, _SAMPLES.value,
                                         _TEMPERATURE.value, others=others)
        record["per_axis"], record["per_axis_others"] = per_axis, others
        print(f"held out on one axis (the others {others}):")
        for axis, m in per_axis.items():
            shown = "  ".join(f"{k}={v:.3f}" for k, v in m.items()
                              if k == "success" or k.startswith("pass@"))
            print(f"  {axis:16s} {shown}")
    for texts in examples.values():
        for text in texts:
            print(text)
            print()
    record["examples"] = examples
    out = _OUT.value or (_WORKDIR.value and os.path.join(
        _WORKDIR.value, "eval.json" if _STEP.value is None else f"eval-step{_STEP.value}.json"))
    if out:
        with open(out, "w") as f:
            json.dump(_plain(record), f, indent=2, allow_nan=False)
        print(f"wrote {out}")


def _plain(x):
    """`x` with numpy scalars as Python numbers, tuples as lists and non-finite floats as None
    (so eval.json is strict JSON)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


if __name__ == "__main__":
    cli.run(main, None)
