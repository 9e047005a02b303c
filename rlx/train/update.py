"""The RL update step and the supervised (warm-start) step, as pure functions to jit.

`update_step(train_state, batch, key) -> (train_state, metrics)` runs `epochs` passes over the
batch in `num_minibatches` shuffled minibatches with `lax.scan`, all inside one jit. A minibatch
whose loss or gradient norm is not finite is skipped (parameters and optimizer state untouched)
and counted in `TrainState.skipped`. A minibatch whose gradient is exactly zero (no group with
differing rewards, no KL or entropy term) leaves them untouched too: AdamW would otherwise keep
moving along its momentum, about `lr` per weight for several steps, on no evidence at all.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from rlx import algos
from rlx.models import Critic, Policy

Array = jax.Array


@struct.dataclass
class TrainState:
    """step: minibatch updates attempted; skipped: how many of them were non-finite and dropped."""

    step: Array
    params: Any
    opt_state: Any
    skipped: Array
    critic_params: Any = None
    critic_opt_state: Any = None

    @classmethod
    def create(cls, params, optimizer: optax.GradientTransformation, critic_params=None,
               critic_optimizer: optax.GradientTransformation | None = None) -> TrainState:
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                   skipped=jnp.zeros((), jnp.int32), critic_params=critic_params,
                   critic_opt_state=None if critic_params is None
                   else critic_optimizer.init(critic_params))


@struct.dataclass
class RLBatch:
    """One RL batch, [B,T] arrays aligned with `Trajectory.tokens` (entry t scores tokens[t]).

    policy_mask: float32 loss mask (after any masked-IS rejection). is_weights: rollout-correction
    weights (1 where unused). ref_logprobs: frozen reference log-probs (for a KL loss; zeros if
    unused). returns / old_values: critic targets and pre-update values (PPO with a critic).
    """

    tokens: Array
    policy_mask: Array
    advantages: Array
    old_logprobs: Array
    is_weights: Array
    ref_logprobs: Array
    returns: Array
    old_values: Array


OLD_LOGPROB_SOURCES = ("trainer", "sampler")
CORRECTION_MODES = ("none", "tis", "mis")
CORRECTION_LEVELS = ("token", "sequence")


def _refuse(key: str, value: Any, allowed: Any) -> None:
    raise ValueError(f"{key}={value!r} is not allowed; allowed: {allowed}")


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """Every setting of one RL iteration, typed and hashable (a static argument of the jitted
    stages). `from_config` builds it once from the `rl` config section and validates it there;
    the batch preparation (rlx/train/step.py) and `update_step` read nothing else."""

    # Batch preparation: advantages, the reference KL in the reward, dynamic sampling, which
    # log-probs count as "old", and rollout correction (rlx/algos).
    advantage: str = "grpo"
    advantage_kwargs: tuple[tuple[str, Any], ...] = ()
    group_size: int = 1           # rollout.group_size: rows per task (dynamic sampling)
    dynamic_sampling: bool = False
    kl_reward_coef: float = 0.0   # the row's summed KL to the reference, as an outcome penalty
    old_logprobs: str = "trainer"
    correction_mode: str = "none"
    correction_level: str = "token"
    correction_threshold: float = 2.0
    # The update: policy loss, epochs x minibatches, KL and entropy terms, critic.
    loss: str = "ppo"
    clip_low: float = 0.2
    clip_high: float = 0.28
    clip_c: float = 0.0           # dual-clip constant for ppo; 0 disables it
    loss_agg_mode: str = "token-mean"
    horizon: int = 0              # constant normalizer of seq-mean-token-sum-norm (required there)
    epochs: int = 1
    num_minibatches: int = 1
    temperature: float = 1.0      # the sampler's temperature: log-probs are of logits / T
    kl_coef: float = 0.0          # KL-to-reference term in the loss
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    value_clip: float = 0.5
    chunk_size: int = 512

    @classmethod
    def from_config(cls, rl: ml_collections.ConfigDict, group_size: int = 1) -> RLConfig:
        """From the `rl` section (fields it lacks keep their defaults) and the rollout's
        `group_size`; every name and count is checked here, with the key and what is allowed."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in rl.items() if k in fields}
        values["advantage_kwargs"] = tuple(sorted(dict(rl.get("advantage_kwargs", {})).items()))
        correction = rl.get("correction") or {}
        values.update({f"correction_{k}": v for k, v in dict(correction).items()})
        cfg = cls(**values, group_size=group_size)
        if cfg.temperature == 0:  # greedy sampling records untempered log-probs
            cfg = dataclasses.replace(cfg, temperature=1.0)
        for key, value, allowed in (
                ("advantage", cfg.advantage, algos.ADVANTAGE_ESTIMATORS.names()),
                ("loss", cfg.loss, algos.POLICY_LOSSES.names()),
                ("loss_agg_mode", cfg.loss_agg_mode, algos.AGG_MODES.names()),
                ("old_logprobs", cfg.old_logprobs, OLD_LOGPROB_SOURCES),
                ("correction.mode", cfg.correction_mode, CORRECTION_MODES),
                ("correction.level", cfg.correction_level, CORRECTION_LEVELS)):
            if value not in allowed:
                _refuse(f"rl.{key}", value, list(allowed))
        if cfg.loss_agg_mode == "seq-mean-token-sum-norm" and cfg.horizon <= 0:
            raise ValueError("rl.loss_agg_mode='seq-mean-token-sum-norm' needs rl.horizon > 0, "
                             f"a constant normalizer (got {cfg.horizon}; rows are trimmed to "
                             "their longest episode, so the row length changes from step to "
                             "step); e.g. rollout.max_rounds * rollout.max_new_tokens")
        from rlx.algos.kl import KL_ALIASES

        if cfg.kl_estimator not in algos.KL_ESTIMATORS and cfg.kl_estimator not in KL_ALIASES:
            _refuse("rl.kl_estimator", cfg.kl_estimator, algos.KL_ESTIMATORS.names())
        if cfg.epochs < 1 or cfg.num_minibatches < 1:
            raise ValueError(f"rl.epochs={cfg.epochs} and rl.num_minibatches="
                             f"{cfg.num_minibatches} must be >= 1")
        return cfg

    def loss_kwargs(self) -> dict:
        kw = dict(clip_low=self.clip_low, clip_high=self.clip_high,
                  loss_agg_mode=self.loss_agg_mode, horizon=self.horizon or None)
        if self.loss == "ppo":
            kw["clip_c"] = self.clip_c if self.clip_c > 0 else None
        return kw


def optimizer_step(optimizer: optax.GradientTransformation, params, opt_state, grads,
                   loss: Array) -> tuple[Any, Any, Array, Array, Array]:
    """One optimizer step, or none: parameters and optimizer state stay as they are if the loss
    or the gradient norm is not finite, or if the gradient is exactly zero. An RL minibatch in
    which every group's rewards tie has a zero policy gradient, and AdamW's momentum would still
    move every weight by about `lr` (the MiniMax-M1 settings b2=0.95, eps=1e-15 make that
    decay slowly): in the tiny main job such steps moved the policy further from the warm start
    than the steps with a gradient did. Returns (params, opt_state, grad_norm, finite, empty)."""
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    empty = grad_norm == 0
    apply = finite & ~empty
    grads = jax.tree.map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)
    updates, new_opt = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jnp.where(apply, new, old)
    return (jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_opt, opt_state),
            grad_norm, finite, empty)


def _minibatches(batch: Any, key: Array, n: int) -> Any:
    """Shuffles rows and splits them into n equal minibatches (leading axis n)."""
    b = jax.tree.leaves(batch)[0].shape[0]
    perm = jax.random.permutation(key, b)
    return jax.tree.map(lambda x: x[perm].reshape(n, b // n, *x.shape[1:]), batch)


def make_update_step(policy: Policy, optimizer: optax.GradientTransformation, cfg: RLConfig,
                     critic: Critic | None = None,
                     critic_optimizer: optax.GradientTransformation | None = None):
    """Builds `update_step(state, batch, key) -> (state, metrics)` for `jax.jit`."""

    def policy_objective(params, mb: RLBatch):
        lp, ent = policy.token_stats(params, mb.tokens, temperature=cfg.temperature,
                                     chunk_size=cfg.chunk_size)
        m = mb.policy_mask
        loss, metrics = algos.policy_loss(cfg.loss, lp, mb.old_logprobs, mb.advantages, m,
                                          is_weights=mb.is_weights, **cfg.loss_kwargs())
        metrics["pg_loss"] = loss
        entropy = algos.agg_loss(ent, m, "token-mean")
        metrics["entropy"] = entropy
        kl = algos.agg_loss(algos.kl_penalty(lp, mb.ref_logprobs, cfg.kl_estimator), m,
                            "token-mean")
        metrics["kl_ref"] = kl
        if cfg.kl_coef:
            loss = loss + cfg.kl_coef * kl
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * entropy
        return loss, metrics

    def critic_objective(cparams, mb: RLBatch):
        values = critic.values(cparams, mb.tokens)
        return algos.value_loss(values, mb.returns, mb.old_values, mb.policy_mask,
                                clip=cfg.value_clip, loss_agg_mode=cfg.loss_agg_mode,
                                horizon=cfg.horizon or None)

    def minibatch_step(state: TrainState, mb: RLBatch):
        (loss, metrics), grads = jax.value_and_grad(policy_objective, has_aux=True)(
            state.params, mb)
        params, opt_state, gnorm, finite, empty = optimizer_step(optimizer, state.params,
                                                                 state.opt_state, grads, loss)
        metrics.update(loss=loss, grad_norm=gnorm, skipped=(~finite).astype(jnp.float32),
                       zero_grad=empty.astype(jnp.float32))
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            skipped=state.skipped + (~finite).astype(jnp.int32))
        if critic is not None:
            (vloss, vmetrics), vgrads = jax.value_and_grad(critic_objective, has_aux=True)(
                state.critic_params, mb)
            cparams, copt, vgnorm, vfinite, _ = optimizer_step(
                critic_optimizer, state.critic_params, state.critic_opt_state, vgrads, vloss)
            metrics.update(vmetrics, value_loss=vloss, value_grad_norm=vgnorm)
            new = new.replace(critic_params=cparams, critic_opt_state=copt,
                              skipped=new.skipped + (~vfinite).astype(jnp.int32))
        return new, metrics

    def update_step(state: TrainState, batch: RLBatch, key: Array):
        b = batch.tokens.shape[0]
        if b % cfg.num_minibatches:
            raise ValueError(f"rl.num_minibatches={cfg.num_minibatches} does not divide the "
                             f"batch of {b} rows")

        def epoch(state, key_e):
            return jax.lax.scan(minibatch_step, state,
                                _minibatches(batch, key_e, cfg.num_minibatches))

        state, metrics = jax.lax.scan(epoch, state, jax.random.split(key, cfg.epochs))
        out = jax.tree.map(jnp.mean, metrics)
        out["skipped"] = jnp.sum(metrics["skipped"])
        return state, out

    return update_step


def make_sft_step(policy: Policy, optimizer: optax.GradientTransformation, chunk_size: int = 512):
    """`sft_step(state, tokens [B,T], loss_mask [B,T], key) -> (state, metrics)`: token-mean
    negative log-likelihood on the masked (assistant) tokens, with the same non-finite skip."""

    def objective(params, tokens, mask):
        lp = policy.token_logprobs(params, tokens, chunk_size=chunk_size)
        m = mask.astype(jnp.float32)
        nll = -jnp.sum(lp * m) / jnp.maximum(jnp.sum(m), 1.0)
        return nll, {"nll": nll}

    def sft_step(state: TrainState, tokens: Array, loss_mask: Array, key: Array):
        del key
        (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params, tokens, loss_mask)
        params, opt_state, gnorm, finite, _ = optimizer_step(optimizer, state.params,
                                                             state.opt_state, grads, loss)
        metrics.update(grad_norm=gnorm, skipped=(~finite).astype(jnp.int32))
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                             skipped=state.skipped + (~finite).astype(jnp.int32)), metrics

    return sft_step
