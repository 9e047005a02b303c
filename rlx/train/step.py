"""One RL iteration, top to bottom, and the compiled stages of a run.

`Run(setup).rl_step(state, key)`: roll out a batch of episodes (one jit, no host round trips
for jittable envs) -> rewards -> `prepare` (one jit: trainer and reference log-probs beside the
sampler's, values, advantages, rollout correction, mismatch metrics) -> `update_step` (one jit:
epochs x minibatches of the policy loss under `lax.scan`, rlx/train/update.py) -> metrics.
`Run` also holds the supervised step, the demo batch makers and the state shardings every stage
keeps (the donated state keeps one layout, so each stage compiles once); every stage is an
`rlx.sharding.sharded_jit`, as the rollout's are. rlx/train/loop.py drives it: checkpoints,
evaluation, logging.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import optax

from rlx import algos, diagnostics, sharding
from rlx.rollout import run_episodes
from rlx.rollout.trajectory import Trajectory
from rlx.train import setup as setup_lib
from rlx.train.demos import make_demos, parse_schedule
from rlx.train.metrics import episode_metrics
from rlx.train.update import RLBatch, TrainState, make_sft_step, make_update_step

Array = jax.Array
SFT, RL = "sft", "rl"   # the two stages of a run (and of its checkpoints)


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
    log-probs, values, advantages, rollout correction and mismatch metrics. Reads `s.rl`."""
    rl, policy, critic = s.rl, s.policy, s.critic

    def prepare(params, ref_params, critic_params, traj: Trajectory, reward: Array):
        tokens = traj.tokens
        mask = traj.policy_mask.astype(jnp.float32)
        trainer_lp = policy.token_logprobs(params, tokens, temperature=rl.temperature)
        # The frozen reference (the warm-start policy): for a KL term and, always, for the
        # "KL to reference" metric.
        ref_lp = policy.token_logprobs(ref_params, tokens, temperature=rl.temperature)
        kl_tok = algos.kl_penalty(trainer_lp, ref_lp, rl.kl_estimator) * mask
        if rl.kl_reward_coef > 0:  # KL in the reward: the row's summed KL, as an outcome penalty
            reward = reward - rl.kl_reward_coef * jnp.sum(kl_tok, -1)
        values = None
        if critic is not None:
            values = critic.values(critic_params, tokens)
        metrics = {}
        if rl.dynamic_sampling:
            r = reward.reshape(-1, rl.group_size)
            keep = jnp.repeat(jnp.max(r, 1) > jnp.min(r, 1), rl.group_size)
            mask = mask * keep[:, None]
            metrics["groups_kept"] = jnp.mean(keep.astype(jnp.float32))
        inputs = algos.AdvantageInputs(rewards=reward, mask=mask, group=traj.group, values=values,
                                       kl=kl_tok)
        hparams = dict(rl.advantage_kwargs)
        adv, returns = algos.compute_advantages(rl.advantage, inputs, **hparams)
        old = algos.select_old_logprobs(rl.old_logprobs, sampler=traj.rollout_logprobs,
                                        trainer=trainer_lp)
        is_w = jnp.ones_like(mask)
        if rl.correction_mode != "none":
            corr = algos.rollout_correction_weights(
                trainer_lp, traj.rollout_logprobs, mask, level=rl.correction_level,
                mode=rl.correction_mode, threshold=rl.correction_threshold)
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


class Run:
    """Holds the jitted stages and the state shardings of one run."""

    def __init__(self, s: setup_lib.Setup):
        self.s = s
        cfg = s.config
        self.sft_opt, self.rl_opt, self.critic_opt = setup_lib.optimizers(cfg)
        mesh, rules = s.mesh, s.rules
        self.param_sh = sharding.logical_to_sharding(s.policy.param_logical_specs(), mesh, rules)
        self.critic_sh = (None if s.critic is None else
                          sharding.logical_to_sharding(s.critic.param_logical_specs(), mesh, rules))
        self.state_sh = {stage: jax.tree.map(lambda x: x.sharding, self.abstract_state(stage))
                         for stage in (SFT, RL)}
        rows, rep = sharding.ROWS, sharding.REPLICATED

        def jit(fn, in_specs, out_specs, donate_argnums=()):
            return sharding.sharded_jit(fn, mesh, rules, in_specs=in_specs, out_specs=out_specs,
                                        donate_argnums=donate_argnums)

        # The donated state keeps one layout (`state_sh`), so each stage compiles once per shape.
        sft_train, rl_train = self.state_sh[SFT]["train"], self.state_sh[RL]["train"]
        self.sft_step = jit(make_sft_step(s.policy, self.sft_opt), (sft_train, rows, rows, rep),
                            (sft_train, rep), donate_argnums=0)
        self.update_step = jit(
            make_update_step(s.policy, self.rl_opt, s.rl, s.critic, self.critic_opt),
            (rl_train, rows, rep), (rl_train, rep), donate_argnums=0)
        self.prepare = jit(make_prepare(s), (self.param_sh, self.param_sh, self.critic_sh, rows,
                                             rows), (rows, rep))
        # One jitted batch maker per stage of `sft.mixture` (see rlx/train/demos.py).
        self.demo_stages = [
            (until, jit(make_demos(s.env, s.env_params, cfg.sft.batch_size, cfg.sft.max_len,
                                   cfg.sft.max_rounds, mixture), (rep,), rows))
            for mixture, until in parse_schedule(cfg.sft.get("mixture") or cfg.env.train_axes)]

    def demos(self, step: int, key: Array):
        """SFT batch of `step`: (tokens, loss mask) from the stage the step falls in."""
        return next(fn for until, fn in self.demo_stages if until is None or step < until)(key)

    def rl_step(self, state: dict, key: Array) -> tuple[dict, dict]:
        """One RL iteration on `state` ({"train": TrainState, "ref": params}): roll out a
        batch -> rewards -> old and reference log-probs, advantages, correction (`prepare`) ->
        the update (epochs x minibatches) -> the new state and the step's metrics (episode
        means, update and mismatch metrics, stage times and throughput, compiles)."""
        s = self.s
        k_roll, k_upd = jax.random.split(key)
        compiles_before = COMPILES.count
        t0 = time.perf_counter()
        traj = run_episodes(s.policy, state["train"].params, s.env, s.env_params, k_roll,
                            **s.sampling)
        total, comps = s.reward_fn(traj, traj.task)
        jax.block_until_ready(total)
        t1 = time.perf_counter()
        traj = trim_time(traj)
        train = state["train"]
        batch, pm = self.prepare(train.params, state["ref"], train.critic_params, traj, total)
        jax.block_until_ready(batch)
        t2 = time.perf_counter()
        train, um = self.update_step(train, batch, k_upd)
        jax.block_until_ready(train)
        t3 = time.perf_counter()
        m = dict(episode_metrics(traj, total, comps), **pm, **um)
        m.update({f"rollout/{k}": v for k, v in traj.stats.items()})  # e.g. idle decode slots
        n_tok = float(jnp.sum(traj.length))
        m.update(time_rollout=t1 - t0, time_prepare=t2 - t1, time_update=t3 - t2,
                 rollout_tokens_per_s=n_tok / (t1 - t0), update_tokens_per_s=n_tok / (t3 - t2),
                 skipped_total=train.skipped, row_width=traj.tokens.shape[1],
                 compiles=COMPILES.count - compiles_before)
        return {"train": train, "ref": state["ref"]}, m

    def init_params(self, key: Array):
        if self.s.init_params is not None:  # a pretrained checkpoint (config.init.hf_path)
            return jax.device_put(self.s.init_params(key), self.param_sh)
        return sharding.init_sharded(self.s.policy, key, self.s.mesh, self.s.rules)[0]

    def init_critic(self, key: Array):
        return sharding.init_sharded(self.s.critic, key, self.s.mesh, self.s.rules)[0]

    def abstract_state(self, stage: str):
        """Shapes, dtypes and shardings of the checkpointed pytree for `stage`."""

        def make():
            params = self.s.policy.init(jax.random.key(0))
            if stage == SFT:
                return {"train": TrainState.create(params, self.sft_opt)}
            critic = None if self.s.critic is None else self.s.critic.init(jax.random.key(0))
            return {"train": TrainState.create(params, self.rl_opt, critic, self.critic_opt),
                    "ref": params}

        # The shardings of a fresh state built under jit with its params, and every
        # param-shaped part of the optimizer state (AdamW's moments), constrained to the params'
        # logical shardings; counters are replicated. Orbax restores straight into these.
        def constrain(params, opt_state, shardings, optimizer):
            moments = optax.tree_map_params(optimizer, jax.lax.with_sharding_constraint,
                                            opt_state, shardings, transform_non_params=lambda x: x)
            return jax.lax.with_sharding_constraint(params, shardings), moments

        def constrained():
            state = make()
            train = state["train"]
            params, opt_state = constrain(train.params, train.opt_state, self.param_sh,
                                          self.sft_opt if stage == SFT else self.rl_opt)
            train = train.replace(params=params, opt_state=opt_state)
            if train.critic_params is not None:
                critic, critic_opt_state = constrain(train.critic_params, train.critic_opt_state,
                                                     self.critic_sh, self.critic_opt)
                train = train.replace(critic_params=critic, critic_opt_state=critic_opt_state)
            out = {"train": train}
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


__all__ = ["COMPILES", "RL", "SFT", "Run", "make_prepare", "run_keys", "trim_time"]
