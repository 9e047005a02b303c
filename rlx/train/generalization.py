"""The scaffold-generalization experiment (MiniMax's M2 claim): does perturbing the whole
scaffold in training buy success on scaffolds never seen in training, and by how much more than
varying the tools alone?

Arms differ only in which scaffold axes vary in their training episodes (train split);
everything else (the common start, the budget, tasks, evaluation sets) is shared:
  none              the canonical scaffold only
  tools_only        tool names, descriptions and order
  all_axes          every axis
  all_but_<group>   every axis except one group of `rlx.envs.scaffold.axes.AXIS_GROUPS`
An arm trains `base.sft.steps` on oracle demos of its axes (`config.mixture`), then
`base.rl.steps` of RL on them. Each arm x seed is an ordinary resumable run
(`train_and_evaluate`) in `<workdir>/<arm>/seed<k>`, evaluated greedily on held-out scaffolds of
every axis together (`all`) and of each group alone (`eval.heldout_sets`: the group's axes held
out, the rest canonical), and on its own train scaffolds; `<workdir>/start` evaluates the
common start on the same sets. The figures go to `result.json` in each run, so a rerun skips
finished arms. At the end: `results.md` (a table, mean and per seed) and `generalization.png`
(one panel per evaluation set, bars with the per-seed points).
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from rlx.envs.scaffold.axes import AXES, AXIS_GROUPS
from rlx.train import loop

BASE_ARMS = ("none", "tools_only", "all_axes")
START = "start"   # the run that evaluates the common start


def arm_axes(arm: str) -> str:
    """The axes (a preset or '+'-joined names) that vary in an arm's RL episodes."""
    if arm in BASE_ARMS:
        return arm
    if arm.startswith("all_but_") and arm[len("all_but_"):] in AXIS_GROUPS:
        left = AXIS_GROUPS[arm[len("all_but_"):]]
        return "+".join(a for a in AXES if a not in left)
    raise ValueError(f"arm {arm!r} is unknown; known: {list(all_arms())}")


def all_arms() -> tuple[str, ...]:
    return BASE_ARMS + tuple(f"all_but_{g}" for g in AXIS_GROUPS)


def eval_sets() -> dict[str, str]:
    """Evaluation set name -> the axes whose held-out choices it shows."""
    return {"all": "all_axes", **{g: "+".join(axes) for g, axes in AXIS_GROUPS.items()}}


def parse_arms(value: str) -> list[str]:
    """'none+all_axes' -> ['none', 'all_axes'], every name checked."""
    arms = [x.strip() for x in value.split("+") if x.strip()]
    unknown = [x for x in arms if x not in all_arms()]
    if unknown or not arms:
        raise ValueError(f"arms={value!r}: unknown {unknown}; allowed: {list(all_arms())}")
    return arms


def arm_config(config: ml_collections.ConfigDict, arm: str, seed: int):
    """The run config of one arm and seed; `arm=START` evaluates the common start untrained."""
    cfg = ml_collections.ConfigDict(config.base.to_dict())
    cfg.seed = seed
    if arm == START:
        cfg.sft.steps = cfg.rl.steps = 0
        cfg.env.train_axes = "none"   # its train set: the canonical scaffold it was trained on
    else:
        cfg.env.train_axes = arm_axes(arm)
        cfg.sft.mixture = config.mixture.format(axes=cfg.env.train_axes)
    cfg.env.eval_axes = "all_axes"
    cfg.eval.heldout_sets = {name: axes for name, axes in eval_sets().items() if name != "all"}
    cfg.mesh.shape = tuple(cfg.mesh.shape)
    cfg.lock()
    return cfg


def _success(metrics: dict[str, float]) -> dict[str, float]:
    """Greedy success per evaluation set from a run's `evaluate_all` metrics."""
    out = {name: metrics[f"heldout:{name}/success"] for name in eval_sets() if name != "all"}
    return {"all": metrics["heldout/success"], **out, "train": metrics["train/success"]}


def _run_once(config: ml_collections.ConfigDict, arm: str, seed: int, workdir: str) -> dict:
    """One arm x seed: its success per evaluation set, from `result.json` if it finished."""
    run_dir = os.path.join(workdir, arm) if arm == START else os.path.join(workdir, arm, f"seed{seed}")
    path = os.path.join(run_dir, "result.json")
    if not os.path.exists(path):
        cfg = arm_config(config, arm, seed)
        print(f"== {arm} seed {seed}: train_axes={cfg.env.train_axes} sft_steps={cfg.sft.steps} "
              f"rl_steps={cfg.rl.steps}", flush=True)
        summary = loop.train_and_evaluate(cfg, run_dir)
        with open(path, "w") as f:
            json.dump(_success(summary["final"]), f, indent=2)
    with open(path) as f:
        return json.load(f)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) the start's evaluation and every arm x seed, then writes the table and
    the plot."""
    arms = parse_arms(config.arms)
    # Arms share shapes and code: later arms load their executables from this cache.
    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    start = _run_once(config, START, 0, workdir)
    results: dict[str, dict[int, dict[str, float]]] = {arm: {} for arm in arms}
    for seed in range(config.seeds):   # seed-major: a stopped run has every arm's first seeds
        for arm in arms:
            results[arm][seed] = _run_once(config, arm, seed, workdir)
    table = write_table(results, start, os.path.join(workdir, "results.md"))
    plot(results, start, os.path.join(workdir, "generalization.png"))
    print(table, flush=True)
    return {"results": results, "start": start, "table": table}


def write_table(results: dict, start: dict[str, float], path: str) -> str:
    sets = list(eval_sets()) + ["train"]
    # "train": each arm's own train scaffolds (the start's: the canonical scaffold).
    lines = ["| arm | " + " | ".join(f"held-out {s}" if s != "train" else "own train scaffolds"
                                      for s in sets) + " |",
             "|---|" + "---|" * len(sets),
             "| start | " + " | ".join(f"{start[s]:.3f}" for s in sets) + " |"]
    for arm, by_seed in results.items():
        cells = []
        for s in sets:
            vals = np.array([r[s] for r in by_seed.values()])
            spread = f" ± {vals.std(ddof=1):.3f}" if len(vals) > 1 else ""
            cells.append(f"{vals.mean():.3f}{spread} ({', '.join(f'{v:.3f}' for v in vals)})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    with open(path, "w") as f:
        f.write(text + "\n")
    return text


def plot(results: dict, start: dict[str, float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(eval_sets()) + ["train"]
    arms = list(results)
    fig, axes = plt.subplots(1, len(sets), figsize=(3.2 * len(sets), 3.6), sharey=True,
                             squeeze=False)
    for ax, s in zip(axes[0], sets, strict=True):
        for i, arm in enumerate(arms):
            vals = np.array([r[s] for r in results[arm].values()])
            ax.bar(i, vals.mean(), color="C0" if arm != "all_axes" else "C1", alpha=0.6)
            ax.scatter(np.full(len(vals), i), vals, color="k", s=10, zorder=3)
        if s != "train":   # the start's train set is the canonical scaffold, not the arms'
            ax.axhline(start[s], color="gray", ls="--", lw=1, label="start")
        ax.set_title(f"held-out: {s}" if s != "train" else "the arm's own train scaffolds")
        ax.set_xticks(range(len(arms)))
        ax.set_xticklabels(arms, rotation=60, ha="right", fontsize=8)
    axes[0][0].set_ylabel("greedy success")
    axes[0][0].legend(fontsize=8)
    n_seeds = max(len(r) for r in results.values())
    fig.suptitle(f"Scaffold generalization: arms by the axes varied in training, from one start "
                 f"({n_seeds} seed(s), points = seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
