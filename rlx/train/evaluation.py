"""Evaluation: a policy's episodes on the frozen train-scaffold and held-out-scaffold sets.

`evaluate(setup, params, split)` plays one frozen set (the same tasks and scaffolds every time:
a fixed key), `evaluate_all` both sets and `eval.heldout_sets`, as the trainer does; the rest
evaluates a checkpoint of a workdir (or the parameters a config starts from), by scaffold
variant and per held-out axis, and renders a few episodes as text (policy spans marked) so a
researcher can see what it does (`experiments/eval.py`)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rlx.envs import make
from rlx.envs.scaffold import AXES
from rlx.envs.scaffold.tables import axes_mask, axis_labels
from rlx.rollout import run_episodes
from rlx.rollout.trajectory import FinishReason, Trajectory, render_episode
from rlx.train import setup as setup_lib
from rlx.train.checkpoint import Checkpointer
from rlx.train.metrics import episode_metrics, to_python
from rlx.train.step import Run, run_keys

Array = jax.Array


def eval_key(cfg: ml_collections.ConfigDict, split: str) -> Array:
    """The fixed key of the frozen `split` evaluation set: with the env config, it is the set's
    whole definition (no stored copy). `tests/train/test_evaluation.py` pins the content of the
    default config's sets, so a change of JAX's random streams cannot pass unnoticed."""
    return jax.random.fold_in(jax.random.key(cfg.eval.seed), 0 if split == "train" else 1)


def evaluate(s: setup_lib.Setup, params, split: str, samples: int = 1,
             temperature: float | None = None,
             num_episodes: int | None = None) -> tuple[dict[str, float], Trajectory]:
    """Episodes on the frozen `split` set: the same `eval.num_episodes` tasks and scaffolds every
    time (a fixed key), at `temperature` (None: `eval.temperature`, greedy by default).

    `samples` > 1 plays every task of the set `samples` times (consecutive rows, one group per
    task; the tasks are those of `samples=1`). Then `success` is pass@1 (the mean over all
    samples) and `pass@{samples}` is the share of tasks solved by at least one sample: the
    headroom RL can turn into pass@1, since it only reinforces what the policy samples.
    `num_episodes` plays only the first tasks of the set (default: all `eval.num_episodes`).
    """
    cfg = s.config
    if samples < 1:
        raise ValueError(f"samples={samples} must be >= 1")
    temperature = cfg.eval.temperature if temperature is None else temperature
    n = cfg.eval.num_episodes if num_episodes is None else num_episodes
    if not 0 < n <= cfg.eval.num_episodes:
        raise ValueError(f"num_episodes={n}: allowed 1..eval.num_episodes="
                         f"{cfg.eval.num_episodes}")
    kw = dict(s.sampling, batch_size=n * samples, group_size=samples, temperature=temperature)
    traj = run_episodes(s.policy, params, s.env, s.eval_params[split], eval_key(cfg, split), **kw)
    total, comps = s.reward_fn(traj, traj.task)
    metrics = episode_metrics(traj, total, comps)
    if samples > 1 and "correct" in traj.info:
        solved = traj.info["correct"].reshape(-1, samples).any(axis=1)
        metrics[f"pass@{samples}"] = jnp.mean(solved.astype(jnp.float32))
    return to_python(metrics), traj


def evaluate_all(s: setup_lib.Setup, params, pass_k: int = 0, pass_k_tasks: int | None = None
                 ) -> tuple[dict[str, float], dict[str, Trajectory]]:
    """Greedy (`eval.temperature`) metrics of both frozen sets, `{split}/{name}`; with
    `pass_k` > 1 also `{split}/pass@{k}` and `{split}/pass@1` from k samples per task at
    temperature 1, on the first `pass_k_tasks` tasks (default: all). Also returns the greedy
    episodes of both sets, by split."""
    out, episodes = {}, {}
    for split in ("train", "heldout"):
        metrics, episodes[split] = evaluate(s, params, split)
        out.update({f"{split}/{k}": v for k, v in metrics.items()})
        if pass_k > 1:
            sampled, _ = evaluate(s, params, split, samples=pass_k, temperature=1.0,
                                  num_episodes=pass_k_tasks)
            out[f"{split}/pass@{pass_k}"] = sampled[f"pass@{pass_k}"]
            out[f"{split}/pass@1"] = sampled["success"]
    for split in s.eval_params:
        if split.startswith("heldout:"):   # `eval.heldout_sets`: greedy success only
            out[f"{split}/success"] = evaluate(s, params, split)[0]["success"]
    return out, episodes


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run saved in `<workdir>/config.json`."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} an rlx workdir?")
    with open(path) as f:
        cfg = ml_collections.ConfigDict(json.load(f))
    cfg.mesh.shape = tuple(cfg.mesh.shape)
    return cfg


def restore_params(workdir: str, step: int | None = None,
                   config: ml_collections.ConfigDict | None = None):
    """(Setup, step, policy params) of checkpoint `step` (None: latest) of a workdir."""
    config = load_config(workdir) if config is None else config
    s = setup_lib.build(config)
    run = Run(s)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    step = ckpt.latest_step() if step is None else step
    if step is None or step not in ckpt.all_steps():
        raise FileNotFoundError(f"no checkpoint step {step} in {workdir}/checkpoints; "
                                f"available steps: {ckpt.all_steps()}")
    meta = ckpt.restore_meta(step)
    state, _ = ckpt.restore(step, run.abstract_state(meta["stage"]))
    ckpt.close()
    return s, step, state["train"].params


def initial_params(config: ml_collections.ConfigDict):
    """(Setup, policy params) a run of `config` starts from: the `init.hf_path` checkpoint (the
    warm start of the default config) or the random init of `config.seed`."""
    s = setup_lib.build(config)
    return s, Run(s).init_params(run_keys(config)["init"])


def scaffold_labels(s: setup_lib.Setup, traj: Trajectory) -> dict | None:
    """{axis: [rows] labels} of the scaffolds `traj`'s rows were rendered with
    (`rlx.envs.scaffold.tables.axis_labels`); None for envs without scaffolds."""
    if traj.scaffold is None or not hasattr(s.env, "tables"):
        return None
    return axis_labels(s.env.tables, jax.device_get(traj.scaffold))


def success_by_variant(s: setup_lib.Setup, split: str, traj: Trajectory,
                       correct: np.ndarray | None = None
                       ) -> dict[str, dict[str, tuple[float, int]]]:
    """Success of `evaluate(s, params, split, ...)`'s episodes `traj` broken down by each axis
    that varies in the `split` set: {axis: {label: (success rate, episodes)}}. `correct`: [rows]
    (default: the env's `info['correct']`)."""
    labels = scaffold_labels(s, traj)
    if labels is None:
        return {}
    correct = np.asarray(jax.device_get(traj.info["correct"] if correct is None else correct),
                         np.float64)
    if len(correct) != traj.batch_size:
        raise ValueError(f"correct has {len(correct)} rows, the episodes have {traj.batch_size}")
    vary = np.asarray(s.eval_params[split].vary)
    out = {}
    for a, axis in enumerate(AXES):
        if not vary[a]:
            continue
        out[axis] = {str(label): (float(correct[labels[axis] == label].mean()),
                                  int((labels[axis] == label).sum()))
                     for label in sorted(set(labels[axis]))}
    return out


def heldout_set_params(s: setup_lib.Setup, axes: str, others: str = "canonical"):
    """Env params of a set that holds out `axes` (a preset or '+'-joined axes). The other axes
    stay canonical (`others="canonical"`), or take their train variants where `env.train_axes`
    varies them (`others="train"`: what a policy trained on perturbed scaffolds has seen, so
    the set isolates the held-out axes)."""
    kw = setup_lib.env_overrides(s.config.env)
    if others == "canonical":
        return make(s.config.env.name, split="heldout", axes=axes, **kw)[1]
    if others != "train":
        raise ValueError(f"others={others!r}; allowed: 'canonical', 'train'")
    vary = axes_mask(s.config.env.train_axes) | axes_mask(axes)
    return make(s.config.env.name, split=f"heldout:{axes}",
                axes=tuple(a for a, v in zip(AXES, vary, strict=True) if v), **kw)[1]


def evaluate_heldout_sets(s: setup_lib.Setup, params, sets: dict[str, str], samples: int = 1,
                          temperature: float | None = None, others: str = "canonical"
                          ) -> dict[str, dict[str, float]]:
    """Metrics on held-out sets defined by the axes they hold out: {name: metrics} for each
    `name: axes`, the other axes as `others` says (`heldout_set_params`). The sets share the
    frozen held-out key, so they hold the same tasks."""
    out = {}
    for name, axes in sets.items():
        split = f"heldout:{name}"
        s.eval_params[split] = heldout_set_params(s, axes, others)
        out[name] = evaluate(s, params, split, samples, temperature)[0]
    return out


def evaluate_checkpoint(workdir: str | None, step: int | None = None,
                        config: ml_collections.ConfigDict | None = None,
                        num_examples: int = 3, samples: int = 1,
                        temperature: float | None = None) -> tuple[dict, dict[str, list[str]]]:
    """Restores `step` (None: latest) of `workdir` and evaluates both frozen sets; with
    `workdir=None`, evaluates the parameters `config` starts from (e.g. the warm start).
    `samples`, `temperature`: as in `evaluate` (pass@k with samples > 1).

    Returns (metrics `{split}/{name}` plus `{split}/by_variant` (`success_by_variant`), `step`
    and the sampling `temperature` used, {split: rendered episodes}).
    """
    if workdir is None:
        if config is None:
            raise ValueError("evaluate_checkpoint needs a workdir or a config")
        (s, params), step = initial_params(config), "initial"
    else:
        s, step, params = restore_params(workdir, step, config)
    used = s.config.eval.temperature if temperature is None else temperature
    metrics, examples = {"step": step, "temperature": float(used)}, {}
    for split in ("train", "heldout"):
        m, traj = evaluate(s, params, split, samples, temperature)
        metrics.update({f"{split}/{k}": v for k, v in m.items()})
        reasons = np.asarray(jax.device_get(traj.finish_reason))
        correct = np.asarray(jax.device_get(traj.info.get("correct", np.zeros(len(reasons)))))
        metrics[f"{split}/by_variant"] = success_by_variant(s, split, traj, correct)
        examples[split] = [
            f"--- {split} episode {i}: finish={FinishReason(int(reasons[i])).name} "
            f"correct={bool(correct[i])}\n" + render_episode(s.tokenizer, traj, i)
            for i in range(min(num_examples, traj.batch_size))]
    return metrics, examples
