"""Evaluate a checkpoint of a workdir on the frozen train-scaffold and held-out-scaffold sets,
and render a few episodes as text (policy spans marked) so a researcher can see what it does."""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from rlx.rollout.trajectory import FinishReason, Trajectory
from rlx.train import loop
from rlx.train import setup as setup_lib
from rlx.train.checkpoint import Checkpointer


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run saved in `<workdir>/config.json`."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} an rlx workdir?")
    with open(path) as f:
        cfg = ml_collections.ConfigDict(json.load(f))
    cfg.mesh.shape = tuple(cfg.mesh.shape)
    return cfg


def render_episode(tokenizer, traj: Trajectory, row: int, open_mark: str = "\u27e6",
                   close_mark: str = "\u27e7") -> str:
    """Decodes one row; the policy's own tokens are wrapped in open_mark ... close_mark."""
    toks = np.asarray(traj.tokens[row])[: int(traj.length[row])]
    mask = np.asarray(traj.policy_mask[row])[: len(toks)]
    out, start = [], 0
    for i in range(1, len(toks) + 1):
        if i == len(toks) or mask[i] != mask[start]:
            text = tokenizer.decode([int(t) for t in toks[start:i]])
            out.append(f"{open_mark}{text}{close_mark}" if mask[start] else text)
            start = i
    return "".join(out)


def restore_params(workdir: str, step: int | None = None,
                   config: ml_collections.ConfigDict | None = None):
    """(Setup, step, policy params) of checkpoint `step` (None: latest) of a workdir."""
    config = load_config(workdir) if config is None else config
    s = setup_lib.build(config)
    run = loop._Run(s)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    step = ckpt.latest_step() if step is None else step
    if step is None or step not in ckpt.all_steps():
        raise FileNotFoundError(f"no checkpoint step {step} in {workdir}/checkpoints; "
                                f"available steps: {ckpt.all_steps()}")
    meta = ckpt.restore_meta(step)
    state, _ = ckpt.restore(step, run.abstract_state(meta["stage"]))
    ckpt.close()
    return s, step, state["train"].params


def evaluate_checkpoint(workdir: str, step: int | None = None,
                        config: ml_collections.ConfigDict | None = None,
                        num_examples: int = 3) -> tuple[dict, dict[str, list[str]]]:
    """Restores `step` (None: latest) and evaluates both frozen sets.

    Returns (metrics `{split}/{name}`, {split: rendered episodes}).
    """
    s, step, params = restore_params(workdir, step, config)
    metrics, examples = {"step": step}, {}
    for split in ("train", "heldout"):
        m, traj = loop.evaluate(s, params, split)
        metrics.update({f"{split}/{k}": v for k, v in m.items()})
        reasons = np.asarray(jax.device_get(traj.finish_reason))
        correct = np.asarray(jax.device_get(traj.info.get("correct", np.zeros(len(reasons)))))
        examples[split] = [
            f"--- {split} episode {i}: finish={FinishReason(int(reasons[i])).name} "
            f"correct={bool(correct[i])}\n" + render_episode(s.tokenizer, traj, i)
            for i in range(min(num_examples, traj.batch_size))]
    return metrics, examples
