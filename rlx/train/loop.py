"""`train_and_evaluate(config, workdir)`: supervised warm start on oracle demonstrations, then RL.

Per RL step: sample tasks and scaffolds -> roll out episodes (one jit, no host round-trips for
jittable envs) -> rewards -> old / reference log-probs and values -> advantages (+ rollout
correction) -> `update_step` (epochs x minibatches in one jit). The host only moves between
jitted stages, logs, evaluates and checkpoints. Every random key is `fold_in(seed key, step)`, so
a run killed and restarted on the same workdir reproduces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from rlx import algos, diagnostics, sharding
from rlx.rollout import run_episodes
from rlx.rollout.trajectory import Trajectory, render_episode
from rlx.train import setup as setup_lib
from rlx.train import workdir as workdir_lib
from rlx.train.checkpoint import Checkpointer, ensure_writable
from rlx.train.demos import make_demos, parse_schedule
from rlx.train.metrics import MetricsWriter, Progress, plot_curves, read_jsonl, to_python, trim_jsonl
from rlx.train.update import RLBatch, TrainState, make_sft_step, make_update_step

Array = jax.Array
SFT, RL = "sft", "rl"


# -- evaluation ----------------------------------------------------------------------------------

def episode_metrics(traj: Trajectory, total: Array, components: dict[str, Array]) -> dict:
    """Per-batch means: reward and components, success, lengths, rounds, tool calls, hacks."""
    info = traj.info
    out = {"reward": jnp.mean(total)}
    out.update({f"reward/{k}": jnp.mean(v) for k, v in components.items()})
    if "correct" in info:
        out["success"] = jnp.mean(info["correct"].astype(jnp.float32))
    if "used_forbidden_tool" in info:
        out["hack_rate"] = jnp.mean(info["used_forbidden_tool"].astype(jnp.float32))
    if "invalid_calls" in info:
        out["invalid_calls"] = jnp.mean(info["invalid_calls"].astype(jnp.float32))
    out["response_tokens"] = jnp.mean(jnp.sum(traj.policy_mask, -1).astype(jnp.float32))
    out["length"] = jnp.mean(traj.length.astype(jnp.float32))
    out["rounds"] = jnp.mean(traj.rounds.astype(jnp.float32))
    out["tool_calls"] = jnp.mean(traj.tool_calls.astype(jnp.float32))
    out["truncated"] = jnp.mean(traj.truncated.astype(jnp.float32))
    return out


def eval_key(cfg: ml_collections.ConfigDict, split: str) -> Array:
    """The fixed key of the frozen `split` evaluation set."""
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


# -- RL batch preparation (one jit) --------------------------------------------------------------

class _CompileCounter:
    """Counts XLA compilations in this process (JAX's monitoring events). Each RL step logs how
    many it triggered (`compiles`): after the first step, only a new `row_width` bucket should."""

    def __init__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, name: str, duration: float, **kwargs) -> None:
        if name == "/jax/core/compile/backend_compile_duration":
            self.count += 1


COMPILES = _CompileCounter()


def trim_time(traj: Trajectory, bucket: int = 64) -> Trajectory:
    """`traj` with its [B,T] arrays cut to the longest row rounded up to `bucket`: the
    log-prob passes and the update then cost what the episodes are long, not what the buffer
    is (a few bucket sizes, so a few compiles)."""
    width = traj.tokens.shape[1]
    keep = min(width, -(-int(jnp.max(traj.length)) // bucket) * bucket)
    if keep == width:
        return traj
    return traj.replace(tokens=traj.tokens[:, :keep], policy_mask=traj.policy_mask[:, :keep],
                        rollout_logprobs=traj.rollout_logprobs[:, :keep])


def make_prepare(s: setup_lib.Setup):
    """(params, ref_params, critic_params, traj, reward) -> (RLBatch, metrics): old and reference
    log-probs, values, advantages, rollout correction and mismatch metrics."""
    rl, policy, critic = s.config.rl, s.policy, s.critic
    temp = float(s.sampling.get("temperature", 1.0)) or 1.0

    def prepare(params, ref_params, critic_params, traj: Trajectory, reward: Array):
        tokens = traj.tokens
        mask = traj.policy_mask.astype(jnp.float32)
        trainer_lp = policy.token_logprobs(params, tokens, temperature=temp)
        # The frozen reference (the warm-start policy): for a KL term and, always, for the
        # "KL to reference" metric.
        ref_lp = policy.token_logprobs(ref_params, tokens, temperature=temp)
        kl_tok = algos.kl_penalty(trainer_lp, ref_lp, rl.kl_estimator) * mask
        if rl.kl_reward_coef > 0:  # KL in the reward: the row's summed KL, as an outcome penalty
            reward = reward - rl.kl_reward_coef * jnp.sum(kl_tok, -1)
        values = None
        if critic is not None:
            values = critic.values(critic_params, tokens)
        metrics = {}
        if rl.dynamic_sampling:
            g = s.config.rollout.group_size
            r = reward.reshape(-1, g)
            keep = jnp.repeat(jnp.max(r, 1) > jnp.min(r, 1), g)
            mask = mask * keep[:, None]
            metrics["groups_kept"] = jnp.mean(keep.astype(jnp.float32))
        inputs = algos.AdvantageInputs(rewards=reward, mask=mask, group=traj.group, values=values,
                                       kl=kl_tok)
        hparams = dict(rl.advantage_kwargs)
        adv, returns = algos.compute_advantages(rl.advantage, inputs, **hparams)
        old = algos.select_old_logprobs(rl.old_logprobs, sampler=traj.rollout_logprobs,
                                        trainer=trainer_lp)
        is_w = jnp.ones_like(mask)
        if rl.correction.mode != "none":
            corr = algos.rollout_correction_weights(
                trainer_lp, traj.rollout_logprobs, mask, level=rl.correction.level,
                mode=rl.correction.mode, threshold=rl.correction.threshold)
            is_w, mask = corr.weights, corr.mask
            metrics.update({f"correction/{k}": v for k, v in corr.metrics.items()})
        mm = diagnostics.mismatch_metrics(trainer_lp, traj.rollout_logprobs,
                                          traj.policy_mask.astype(jnp.float32))
        metrics.update({f"mismatch/{k}": v for k, v in mm.items()})
        sampled = traj.policy_mask.astype(jnp.float32)
        metrics["kl_ref_rollout"] = jnp.sum(kl_tok) / jnp.maximum(jnp.sum(sampled), 1.0)
        metrics["advantage_abs"] = jnp.sum(jnp.abs(adv) * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        zeros = jnp.zeros_like(mask)
        batch = RLBatch(tokens=tokens, policy_mask=mask, advantages=adv, old_logprobs=old,
                        is_weights=is_w, ref_logprobs=ref_lp, returns=returns,
                        old_values=zeros if values is None else values)
        return batch, metrics

    return prepare


# -- the run -------------------------------------------------------------------------------------

class _Run:
    """Holds the jitted stages and the state shardings of one run."""

    def __init__(self, s: setup_lib.Setup):
        self.s = s
        cfg = s.config
        self.sft_opt, self.rl_opt, self.critic_opt = setup_lib.optimizers(cfg)
        mesh, rules = s.mesh, s.rules
        self.param_sh = sharding.logical_to_sharding(s.policy.param_logical_specs(), mesh, rules)
        self.critic_sh = (None if s.critic is None else
                          sharding.logical_to_sharding(s.critic.param_logical_specs(), mesh, rules))
        self.repl = sharding.replicated(mesh)
        self.rows = sharding.batch_sharding(mesh, 2, rules)
        self.state_sh = {stage: jax.tree.map(lambda x: x.sharding, self.abstract_state(stage))
                         for stage in (SFT, RL)}
        # Explicit in/out shardings: the donated state keeps one layout, so each stage compiles
        # exactly once.
        self.sft_step = jax.jit(
            make_sft_step(s.policy, self.sft_opt),
            in_shardings=(self.state_sh[SFT]["train"], self.rows, self.rows, self.repl),
            out_shardings=(self.state_sh[SFT]["train"], self.repl), donate_argnums=0)
        rl_train = self.state_sh[RL]["train"]
        self.update_step = jax.jit(
            make_update_step(s.policy, self.rl_opt, s.update_cfg, s.critic, self.critic_opt),
            in_shardings=(rl_train, self.rows, self.repl), out_shardings=(rl_train, self.repl),
            donate_argnums=0)
        self.prepare = jax.jit(make_prepare(s), out_shardings=(self.rows, self.repl))
        # One jitted batch maker per stage of `sft.mixture` (see rlx/train/demos.py).
        self.demo_stages = [
            (until, jax.jit(make_demos(s.env, s.env_params, cfg.sft.batch_size, cfg.sft.max_len,
                                       cfg.sft.max_rounds, mixture),
                            out_shardings=(self.rows, self.rows)))
            for mixture, until in parse_schedule(cfg.sft.get("mixture") or cfg.env.train_axes)]

    def demos(self, step: int, key: Array):
        """SFT batch of `step`: (tokens, loss mask) from the stage the step falls in."""
        return next(fn for until, fn in self.demo_stages if until is None or step < until)(key)

    def init_params(self, key: Array):
        if self.s.init_params is not None:  # a pretrained checkpoint (config.init.hf_path)
            return jax.device_put(self.s.init_params(key), self.param_sh)
        return jax.jit(self.s.policy.init, out_shardings=self.param_sh)(key)

    def init_critic(self, key: Array):
        return jax.jit(self.s.critic.init, out_shardings=self.critic_sh)(key)

    def abstract_state(self, stage: str):
        """Shapes, dtypes and shardings of the checkpointed pytree for `stage`."""

        def make():
            params = self.s.policy.init(jax.random.key(0))
            if stage == SFT:
                return {"train": TrainState.create(params, self.sft_opt)}
            critic = None if self.s.critic is None else self.s.critic.init(jax.random.key(0))
            return {"train": TrainState.create(params, self.rl_opt, critic, self.critic_opt),
                    "ref": params}

        # The shardings a fresh state gets when built under jit with its params constrained to
        # their logical shardings: optimizer moments follow the params, counters are
        # replicated. Orbax restores straight into these.
        def constrained():
            state = make()
            train = state["train"]
            params = jax.lax.with_sharding_constraint(train.params, self.param_sh)
            if train.critic_params is not None:
                train = train.replace(critic_params=jax.lax.with_sharding_constraint(
                    train.critic_params, self.critic_sh))
            out = {"train": train.replace(params=params)}
            if "ref" in state:
                out["ref"] = jax.lax.with_sharding_constraint(state["ref"], self.param_sh)
            return out

        compiled = jax.jit(constrained).lower().compile()
        shapes = jax.eval_shape(constrained)
        return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                            shapes, compiled.output_shardings)


def run_keys(config: ml_collections.ConfigDict) -> dict[str, Array]:
    """The root keys of a run (policy init, critic init, SFT, RL) from `config.seed`."""
    names = ("init", "critic", "sft", "rl")
    return dict(zip(names, jax.random.split(jax.random.key(config.seed), len(names)), strict=True))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False) -> dict:
    """Runs (or resumes) warm start + RL in `workdir`; returns the summary dict.

    Writes `config.json`, `metrics.jsonl`, TensorBoard events in `tb/`, checkpoints in
    `checkpoints/`, and at the end `summary.json`, `summary.txt` and `learning_curves.png`. A
    workdir holding another config's run is refused (see rlx/train/workdir.py) unless
    `allow_config_change`; a finished run is reported, not run again.
    """
    t_start = time.perf_counter()
    s = setup_lib.build(config)  # validates the config before anything compiles
    ensure_writable(workdir)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.checkpoint.keep)
    workdir_lib.record_config(workdir, config, resuming=ckpt.latest_step() is not None,
                              allow_change=allow_config_change)
    finished = _finished_summary(workdir, ckpt, config)
    if finished is not None:
        ckpt.close()
        print(f"{workdir} holds a finished run (sft_step={config.sft.steps}, "
              f"rl_step={config.rl.steps}); its summary:\n{finished['text']}", flush=True)
        return finished
    run = _Run(s)
    keys = run_keys(config)
    k_init, k_critic, k_sft, k_rl = (keys[n] for n in ("init", "critic", "sft", "rl"))
    sft_steps, rl_steps = config.sft.steps, config.rl.steps

    meta: dict[str, Any] = {"stage": SFT, "sft_step": 0, "rl_step": 0}
    if ckpt.latest_step() is not None:
        state, meta, latest = ckpt.restore_newest_intact(
            lambda m: run.abstract_state(m["stage"]))
        state = jax.device_put(state, run.state_sh[meta["stage"]])
        print(f"resumed from {ckpt.directory} step {latest} ({meta['stage']} "
              f"sft_step={meta['sft_step']} rl_step={meta['rl_step']})", flush=True)
        # Steps logged after the checkpoint are about to be redone: drop them from the log.
        done = {SFT: meta["sft_step"], "sft_eval": meta["sft_step"], RL: meta["rl_step"],
                "eval": meta["rl_step"]}
        trim_jsonl(os.path.join(workdir, "metrics.jsonl"),
                   lambda r: r["step"] <= done.get(r["stage"], 0))
    else:
        # A run that died before its first checkpoint left metrics of steps about to be redone.
        stale = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(stale):
            os.replace(stale, os.path.join(workdir, f"metrics.{time.strftime('%Y%m%dT%H%M%S')}"
                                                    ".jsonl"))
        state = jax.device_put({"train": TrainState.create(run.init_params(k_init), run.sft_opt)},
                               run.state_sh[SFT])

    writer = MetricsWriter(workdir)

    def log_eval(stage: str, step: int, ev: dict, episodes: dict[str, Trajectory]) -> None:
        """Writes an evaluation, and its first `eval.print_episodes` greedy episodes per split
        decoded as TensorBoard text (policy tokens between ⟦ and ⟧)."""
        writer.write(stage, step, ev)
        for split, traj in episodes.items():
            for row in range(min(config.eval.get("print_episodes", 0), traj.tokens.shape[0])):
                text = render_episode(s.tokenizer, traj, row)
                writer.text(f"{stage}/{split}/episode{row}", step, f"```\n{text}\n```")

    def save(stage_meta: dict) -> None:
        if ckpt.latest_step() == stage_meta["sft_step"] + stage_meta["rl_step"]:
            return  # e.g. rl.steps=0: the warm-start checkpoint is already the final one
        ckpt.save(stage_meta["sft_step"] + stage_meta["rl_step"], state, dict(stage_meta))

    # ---- supervised warm start ----
    if meta["stage"] == SFT:
        progress = Progress(sft_steps, "warm start", ("nll",))
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
    progress = Progress(rl_steps, "rl", ("reward", "success", "heldout/success"))
    for step in range(meta["rl_step"], rl_steps):
        k = jax.random.fold_in(k_rl, step)
        k_roll, k_upd = jax.random.split(k)
        compiles_before = COMPILES.count
        t0 = time.perf_counter()
        traj = run_episodes(s.policy, state["train"].params, s.env, s.env_params, k_roll,
                            **s.sampling)
        total, comps = s.reward_fn(traj, traj.task)
        jax.block_until_ready(total)
        t1 = time.perf_counter()
        traj = trim_time(traj)
        train = state["train"]
        batch, pm = run.prepare(train.params, state["ref"], train.critic_params, traj, total)
        jax.block_until_ready(batch)
        t2 = time.perf_counter()
        train, um = run.update_step(train, batch, k_upd)
        jax.block_until_ready(train)
        t3 = time.perf_counter()
        state = {"train": train, "ref": state["ref"]}
        m = dict(episode_metrics(traj, total, comps), **pm, **um)
        m.update({f"rollout/{k}": v for k, v in traj.stats.items()})  # e.g. idle decode slots
        n_tok = float(jnp.sum(traj.length))
        m.update(time_rollout=t1 - t0, time_prepare=t2 - t1, time_update=t3 - t2,
                 rollout_tokens_per_s=n_tok / (t1 - t0), update_tokens_per_s=n_tok / (t3 - t2),
                 skipped_total=train.skipped, row_width=traj.tokens.shape[1],
                 compiles=COMPILES.count - compiles_before)
        meta["rl_step"] = step + 1
        if config.eval.every and (step + 1) % config.eval.every == 0 and step + 1 < rl_steps:
            ev, episodes = evaluate_all(s, train.params)
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
    summary = _summarize(workdir, meta.get("warm_start", {}), final,
                         time.perf_counter() - t_start)
    _print_eval("final", final)
    print(summary["text"], flush=True)
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


def _print_eval(label: str, ev: dict) -> None:
    keys = [k for k in ("train/success", "heldout/success", "train/reward", "heldout/reward")
            if k in ev]
    print(f"[{label}] " + "  ".join(f"{k}={ev[k]:.3f}" for k in keys), flush=True)


def _summarize(workdir: str, warm: dict, final: dict, wall: float) -> dict:
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
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(workdir, "summary.txt"), "w") as f:
        f.write(text + "\n")
    records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    plot_curves(records, os.path.join(workdir, "learning_curves.png"), CURVES,
                title=f"{os.path.basename(os.path.abspath(workdir))}: warm start, RL and "
                      f"evaluation (raw points faint, moving average solid)")
    return summary


__all__ = ["episode_metrics", "evaluate", "evaluate_all", "make_prepare", "train_and_evaluate"]
