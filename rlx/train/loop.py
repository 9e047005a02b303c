"""`train_and_evaluate(config, workdir)`: supervised warm start on oracle demonstrations, then RL.

Each RL step is `Run.rl_step` (rlx/train/step.py: rollout -> rewards -> log-probs, advantages
and correction -> update); this module is the driver around it: resume, the step loops,
evaluation, checkpoints and logs. Every random key is `fold_in(seed key, step)`, so
a run killed and restarted on the same workdir reproduces the uninterrupted run bit for bit.

Several processes (`rlx.sharding.init_distributed`, docs/scale.md) run this same function on
one global mesh; process 0 writes the files and prints, and all of them checkpoint together.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from rlx import sharding
from rlx.rollout.trajectory import Trajectory, render_episode
from rlx.train import setup as setup_lib
from rlx.train import workdir as workdir_lib
from rlx.train.checkpoint import Checkpointer, ensure_writable
from rlx.train.evaluation import evaluate_all
from rlx.train.metrics import MetricsWriter, Progress, plot_curves, read_jsonl, trim_jsonl
from rlx.train.step import RL, SFT, Run, run_keys
from rlx.train.update import TrainState


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False) -> dict:
    """Runs (or resumes) warm start + RL in `workdir`; returns the summary dict.

    Writes `config.json`, `metrics.jsonl`, TensorBoard events in `tb/`, checkpoints in
    `checkpoints/`, and at the end `summary.json`, `summary.txt` and `learning_curves.png`. A
    workdir holding another config's run is refused (see rlx/train/workdir.py) unless
    `allow_config_change`; a finished run is reported, not run again.
    """
    t_start = time.perf_counter()
    lead = sharding.is_lead()   # the process that writes files and prints
    s = setup_lib.build(config)  # validates the config before anything compiles
    ensure_writable(workdir)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.checkpoint.keep)
    workdir_lib.record_config(workdir, config, resuming=ckpt.latest_step() is not None,
                              allow_change=allow_config_change, write=lead)
    finished = _finished_summary(workdir, ckpt, config)
    if finished is not None:
        ckpt.close()
        _say(f"{workdir} holds a finished run (sft_step={config.sft.steps}, "
             f"rl_step={config.rl.steps}); its summary:\n{finished['text']}")
        return finished
    run = Run(s)
    keys = run_keys(config)
    k_init, k_critic, k_sft, k_rl = (keys[n] for n in ("init", "critic", "sft", "rl"))
    sft_steps, rl_steps = config.sft.steps, config.rl.steps

    meta: dict[str, Any] = {"stage": SFT, "sft_step": 0, "rl_step": 0}
    if ckpt.latest_step() is not None:
        state, meta, latest = ckpt.restore_newest_intact(
            lambda m: run.abstract_state(m["stage"]))
        state = jax.device_put(state, run.state_sh[meta["stage"]])
        _say(f"resumed from {ckpt.directory} step {latest} ({meta['stage']} "
             f"sft_step={meta['sft_step']} rl_step={meta['rl_step']})")
        # Steps logged after the checkpoint are about to be redone: drop them from the log.
        done = {SFT: meta["sft_step"], "sft_eval": meta["sft_step"], RL: meta["rl_step"],
                "eval": meta["rl_step"]}
        if lead:
            trim_jsonl(os.path.join(workdir, "metrics.jsonl"),
                       lambda r: r["step"] <= done.get(r["stage"], 0))
    else:
        # A run that died before its first checkpoint left metrics of steps about to be redone.
        stale = os.path.join(workdir, "metrics.jsonl")
        if lead and os.path.exists(stale):
            os.replace(stale, os.path.join(workdir, f"metrics.{time.strftime('%Y%m%dT%H%M%S')}"
                                                    ".jsonl"))
        state = jax.device_put({"train": TrainState.create(run.init_params(k_init), run.sft_opt)},
                               run.state_sh[SFT])

    writer = MetricsWriter(workdir, files=lead)
    quiet = None if lead else open(os.devnull, "w")   # progress of the other processes

    def log_eval(stage: str, step: int, ev: dict, episodes: dict[str, Trajectory]) -> None:
        """Writes an evaluation, and its first `eval.print_episodes` greedy episodes per split
        decoded as TensorBoard text (policy tokens between ⟦ and ⟧)."""
        writer.write(stage, step, ev)
        for split, traj in episodes.items():
            rows = min(config.eval.get("print_episodes", 0), traj.tokens.shape[0])
            if not rows:
                continue
            traj = sharding.to_host(traj)   # with several processes, gathered by all of them
            for row in range(rows):
                text = render_episode(s.tokenizer, traj, row)
                writer.text(f"{stage}/{split}/episode{row}", step, f"```\n{text}\n```")

    def save(stage_meta: dict) -> None:
        if ckpt.latest_step() == stage_meta["sft_step"] + stage_meta["rl_step"]:
            return  # e.g. rl.steps=0: the warm-start checkpoint is already the final one
        ckpt.save(stage_meta["sft_step"] + stage_meta["rl_step"], state, dict(stage_meta))

    # ---- supervised warm start ----
    if meta["stage"] == SFT:
        progress = Progress(sft_steps, "warm start", ("nll",), stream=quiet)
        for step in range(meta["sft_step"], sft_steps):
            k = jax.random.fold_in(k_sft, step)
            tokens, mask = run.demos(step, k)
            train, m = run.sft_step(state["train"], tokens, mask, k)
            state = {"train": train}
            values = writer.write(SFT, step + 1, m)
            progress.update(step + 1, values)
            meta["sft_step"] = step + 1
            eval_every = config.sft.get("eval_every", 0)
            if eval_every and (step + 1) % eval_every == 0 and step + 1 < sft_steps:
                ev, episodes = evaluate_all(s, state["train"].params)
                log_eval("sft_eval", step + 1, ev, episodes)
                _print_eval(f"warm start step {step + 1}", ev)
            if (step + 1) % config.checkpoint.every == 0 and step + 1 < sft_steps:
                save(meta)
        params = state["train"].params
        warm, episodes = evaluate_all(s, params, config.eval.get("pass_k", 0),
                                      config.eval.get("pass_k_tasks") or None)
        log_eval("eval", 0, warm, episodes)
        critic = None if s.critic is None else run.init_critic(k_critic)
        # The reference is a copy: the train state's buffers are donated to every update.
        state = jax.device_put(
            {"train": TrainState.create(params, run.rl_opt, critic, run.critic_opt),
             "ref": jax.jit(lambda p: jax.tree.map(jnp.copy, p))(params)}, run.state_sh[RL])
        meta.update(stage=RL, warm_start=warm)
        save(meta)
        _print_eval("warm start", warm)

    # ---- RL ----
    progress = Progress(rl_steps, "rl", ("reward", "success", "heldout/success"), stream=quiet)
    for step in range(meta["rl_step"], rl_steps):
        state, m = run.rl_step(state, jax.random.fold_in(k_rl, step))
        meta["rl_step"] = step + 1
        if config.eval.every and (step + 1) % config.eval.every == 0 and step + 1 < rl_steps:
            ev, episodes = evaluate_all(s, state["train"].params)
            log_eval("eval", step + 1, ev, episodes)
            m.update({k: v for k, v in ev.items() if k.endswith("/success")})
        values = writer.write(RL, step + 1, m)
        progress.update(step + 1, values)
        if (step + 1) % config.checkpoint.every == 0 and step + 1 < rl_steps:
            save(meta)

    if rl_steps == 0 and meta.get("warm_start"):
        final = meta["warm_start"]  # no RL: the warm-start evaluation is the final one
    else:
        final, episodes = evaluate_all(s, state["train"].params, config.eval.get("pass_k", 0),
                                       config.eval.get("pass_k_tasks") or None)
        if meta.get("final_written_at") != rl_steps:
            log_eval("eval", rl_steps, final, episodes)
    if meta.get("final_written_at") != rl_steps:
        writer.hparams(config.to_dict(), {f"final/{k}": v for k, v in final.items()
                                          if k.endswith(("success", "pass@1"))})
    meta["final_written_at"] = rl_steps
    save(meta)
    ckpt.close()
    writer.close()
    if quiet is not None:
        quiet.close()
    summary = _summarize(workdir, meta.get("warm_start", {}), final,
                         time.perf_counter() - t_start, write=lead)
    _print_eval("final", final)
    _say(summary["text"])
    return summary


def _finished_summary(workdir: str, ckpt: Checkpointer, config) -> dict | None:
    """The stored summary if `workdir`'s latest checkpoint is the end of this config's run."""
    path = os.path.join(workdir, "summary.json")
    if ckpt.latest_step() is None or not os.path.exists(path):
        return None
    try:
        meta = ckpt.restore_meta(ckpt.latest_step())
        with open(path) as f:
            summary = json.load(f)
    except Exception:  # noqa: BLE001 -- damaged: not finished; the resume path reports it
        return None
    # The end of the run: RL done (for rl.steps=0 the warm-start checkpoint is the last one),
    # and summary.json written after it.
    if (meta.get("stage") != RL or meta.get("rl_step") != config.rl.steps
            or meta.get("sft_step") != config.sft.steps):
        return None
    return summary


# The panels of learning_curves.png: (title, stage, metric keys), one quantity per panel.
CURVES = (
    ("warm-start NLL", SFT, ("nll",)),
    ("warm-start eval: success", "sft_eval", ("train/success", "heldout/success")),
    ("RL reward", RL, ("reward",)),
    ("RL success", RL, ("success",)),
    ("eval: success (greedy)", "eval", ("train/success", "heldout/success")),
    ("KL to the reference", RL, ("kl_ref",)),
    ("entropy", RL, ("entropy",)),
    ("|advantage|", RL, ("advantage_abs",)),
    ("gradient norm", RL, ("grad_norm",)),
    ("trainer/sampler Pearson r", RL, ("mismatch/pearson",)),
    ("trainer/sampler k3 KL", RL, ("mismatch/k3_kl",)),
    ("tool calls per episode", RL, ("tool_calls",)),
)


def _say(text: str) -> None:
    """Prints in the process that writes files (the only one, unless several run)."""
    if sharding.is_lead():
        print(text, flush=True)


def _print_eval(label: str, ev: dict) -> None:
    keys = [k for k in ("train/success", "heldout/success", "train/reward", "heldout/reward")
            if k in ev]
    _say(f"[{label}] " + "  ".join(f"{k}={ev[k]:.3f}" for k in keys))


def _summarize(workdir: str, warm: dict, final: dict, wall: float, write: bool = True) -> dict:
    lines = ["rlx run summary", f"workdir: {workdir}", f"wall time this process: {wall:.0f}s", ""]
    lines.append(f"{'metric':28s} {'warm start':>11s} {'after RL':>11s} {'change':>9s}")
    for key in sorted(final):
        if not any(key.endswith(x) for x in ("success", "reward", "rounds", "tool_calls",
                                             "hack_rate", "invalid_calls", "pass@1")) and (
                "/pass@" not in key):
            continue
        w, f = warm.get(key, float("nan")), final[key]
        lines.append(f"{key:28s} {w:11.3f} {f:11.3f} {f - w:+9.3f}")
    text = "\n".join(lines)
    summary = {"warm_start": warm, "final": final, "wall_seconds": wall, "text": text}
    if not write:
        return summary
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(workdir, "summary.txt"), "w") as f:
        f.write(text + "\n")
    records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    plot_curves(records, os.path.join(workdir, "learning_curves.png"), CURVES,
                title=f"{os.path.basename(os.path.abspath(workdir))}: warm start, RL and "
                      f"evaluation (raw points faint, moving average solid)")
    return summary


__all__ = ["train_and_evaluate"]
