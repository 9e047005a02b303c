"""Advantage estimators: GRPO (and Dr.GRPO), RLOO, GAE and REINFORCE++, matching verl.

Layout. Every [B,T] array covers whole rows (prompt, policy tokens, tool observations, padding);
`mask` [B,T] is 1 exactly on policy tokens. Outputs are 0 wherever `mask` is 0.

Groups (GRPO, RLOO). `group` is either an int G — rows come in contiguous groups of G, which is
how the rlx trainer lays out G samples per prompt (fast path: a reshape) — or a [B] int array of
group ids in any order (as `Trajectory.group`; O(B^2) pairwise path). Both give the same numbers.

Observation gaps (GAE, REINFORCE++). The recursions link consecutive *policy* tokens: a tool
observation between two policy tokens is skipped — it does not discount, does not break the chain,
and gets no advantage. Concretely, for the policy positions p_0 < p_1 < ... of a row, the
estimators equal the textbook ones run on the compressed sequence (r_{p_k}, V_{p_k}), scattered
back to the positions p_k. This is verl's masked GAE (which carries `nextvalues` and `lastgaelam`
across masked positions). Rewards placed on non-policy positions are credited, undiscounted, to
the closest policy token before them (rewards before the first policy token are dropped); verl
drops them instead. The two agree whenever rewards sit on policy tokens, which is how
`outcome_token_rewards` places them.

The registry `ADVANTAGE_ESTIMATORS` maps config names to functions with one signature:
`fn(inputs: AdvantageInputs, **hparams) -> (advantages [B,T], returns [B,T])`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlx.algos._masked import f32, masked_whiten
from rlx.registry import Registry

Array = jax.Array
Group = int | Array


# -- groups --------------------------------------------------------------------------------------


def _scores(rewards: Array) -> Array:
    """[B] sequence scores: the reward itself, or verl's `token_level_rewards.sum(-1)`."""
    rewards = f32(rewards)
    if rewards.ndim == 1:
        return rewards
    if rewards.ndim == 2:
        return jnp.sum(rewards, axis=-1)
    raise ValueError(f"rewards must be [B] or [B,T]; got shape {rewards.shape}")


def _group_stats(scores: Array, group: Group) -> tuple[Array, Array, Array]:
    """Per row: (group sum, group unbiased std, group size), each [B]."""
    b = scores.shape[0]
    if isinstance(group, int):
        if group <= 0 or b % group:
            raise ValueError(f"group size {group} does not divide the batch size {b}; "
                             f"pass a positive divisor of {b} or a [B] array of group ids")
        s = scores.reshape(b // group, group)
        total = jnp.sum(s, axis=1, keepdims=True)
        mean = total / group
        var = jnp.sum(jnp.square(s - mean), axis=1, keepdims=True) / max(group - 1, 1)
        full = lambda x: jnp.broadcast_to(x, s.shape).reshape(b)
        return full(total), full(jnp.sqrt(var)), jnp.full((b,), float(group), jnp.float32)
    ids = jnp.asarray(group)
    if ids.shape != (b,):
        raise ValueError(f"group ids must have shape ({b},); got {ids.shape}")
    same = (ids[:, None] == ids[None, :]).astype(jnp.float32)  # [B,B]
    count = jnp.sum(same, axis=1)
    total = same @ scores
    mean = total / count
    var = jnp.sum(same * jnp.square(scores[None, :] - mean[:, None]), axis=1)
    var = var / jnp.maximum(count - 1.0, 1.0)
    return total, jnp.sqrt(var), count


def grpo_advantages(rewards: Array, mask: Array, group: Group, *, norm_by_std: bool = True,
                    eps: float = 1e-6) -> Array:
    """GRPO group-normalized outcome advantages, verl's `compute_grpo_outcome_advantage`.

    A_i = (s_i - mean_g) / (std_g + eps), broadcast over the row's policy tokens, where s_i is the
    row's reward (`rewards` [B], or [B,T] token rewards summed over T as verl does), mean_g and
    std_g the mean and the UNBIASED (n-1) standard deviation of its group, eps = 1e-6.
    `norm_by_std=False` gives Dr.GRPO (arXiv:2503.20783): A_i = s_i - mean_g.
    A group of one has mean 0 and std 1 (verl), so its advantage is s_i / (1 + eps).
    Every row counts in its group's statistics, including rows with no policy tokens.

    Returns [B,T] float32 advantages (0 off the mask).
    """
    scores = _scores(rewards)
    total, std, count = _group_stats(scores, group)
    single = count <= 1
    mean = jnp.where(single, 0.0, total / count)
    std = jnp.where(single, 1.0, std)
    adv = (scores - mean) / (std + eps) if norm_by_std else scores - mean
    return adv[:, None] * f32(mask)


def rloo_advantages(rewards: Array, mask: Array, group: Group) -> Array:
    """RLOO (arXiv:2402.14740), verl's `compute_rloo_outcome_advantage`.

    A_i = s_i - mean of the OTHER rows of the group = (n s_i - sum_g) / (n - 1). A group of one
    keeps A_i = s_i (verl's loop version; verl's `rloo_vectorized` gives 0 there instead).
    Returns [B,T] float32 advantages (0 off the mask).
    """
    scores = _scores(rewards)
    total, _, count = _group_stats(scores, group)
    adv = jnp.where(count > 1, (count * scores - total) / jnp.maximum(count - 1.0, 1.0), scores)
    return adv[:, None] * f32(mask)


# -- token-level recursions ----------------------------------------------------------------------


def _reverse_scan(step, carry, *xs_bt: Array) -> Array:
    """Runs `step` from the last time step to the first over [B,T] inputs; returns [B,T]."""
    xs = tuple(jnp.swapaxes(x, 0, 1) for x in xs_bt)  # [T,B]
    _, ys = jax.lax.scan(step, carry, xs, reverse=True)
    return jnp.swapaxes(ys, 0, 1)


def gae(token_rewards: Array, values: Array, mask: Array, *, gamma: float = 1.0,
        lam: float = 1.0, whiten: bool = True) -> tuple[Array, Array]:
    """Generalized advantage estimation, verl's `compute_gae_advantage_return`.

    Over a row's policy positions p_0 < p_1 < ... < p_n (observations skipped, see the module
    docstring), with V_{p_{n+1}} = 0:
        delta_k = r_{p_k} + gamma * V_{p_{k+1}} - V_{p_k}
        A_k     = delta_k + gamma * lam * A_{k+1}
        returns_k = A_k + V_{p_k}     (the critic's target, taken before whitening)
    computed by a reverse `lax.scan` over T. `whiten=True` (verl's behaviour) then whitens the
    advantages over all masked tokens of the batch (unbiased variance, rsqrt(var + 1e-8)).
    verl's defaults are gamma = lam = 1.

    Args: token_rewards, values, mask: [B,T]. Returns (advantages, returns), [B,T] float32, 0 off
    the mask.
    """
    r, v, m = f32(token_rewards), f32(values), f32(mask)

    def step(carry, x):
        next_v, next_adv, pending = carry
        r_t, v_t, m_t = x
        on = m_t > 0
        adv_t = r_t + pending + gamma * next_v - v_t + gamma * lam * next_adv
        carry = (jnp.where(on, v_t, next_v), jnp.where(on, adv_t, next_adv),
                 jnp.where(on, 0.0, pending + r_t))
        return carry, jnp.where(on, adv_t, 0.0)

    zeros = jnp.zeros(r.shape[:1], jnp.float32)
    adv = _reverse_scan(step, (zeros, zeros, zeros), r, v, m)
    returns = (adv + v) * m
    if whiten:
        adv = masked_whiten(adv, m)
    return adv, returns


def reinforce_pp_advantages(token_rewards: Array, mask: Array, *, gamma: float = 1.0,
                            kl: Array | None = None, kl_coef: float = 0.0,
                            whiten: bool = True) -> tuple[Array, Array]:
    """REINFORCE++ (arXiv:2501.03262), verl's `compute_reinforce_plus_plus_outcome_advantage`.

    The KL penalty is folded into the token rewards first, as verl's `apply_kl_penalty` does when
    `use_kl_in_reward` is on: r'_t = r_t - kl_coef * kl_t * mask_t (`kl` from `kl_penalty`, e.g.
    k1 = logp - ref_logp; leave it None to fold nothing). Then the discounted return-to-go over
    the row's policy positions, G_k = r'_{p_k} + gamma * G_{k+1} (observations skipped, see the
    module docstring), and with `whiten=True` (verl) the advantages are G whitened over all
    masked tokens of the batch (unbiased variance, rsqrt(var + 1e-8)).

    Deviation: verl resets the running return at every masked position, so with tool
    observations between the policy's turns its earlier turns receive none of the outcome
    reward; rlx carries the return across observations (it links consecutive policy tokens).
    The two agree on gap-free responses.

    Returns (advantages, returns), [B,T] float32, 0 off the mask.
    """
    r, m = f32(token_rewards), f32(mask)
    if kl is not None:
        r = r - kl_coef * f32(kl) * m

    def step(carry, x):
        next_ret, pending = carry
        r_t, m_t = x
        on = m_t > 0
        ret_t = r_t + pending + gamma * next_ret
        carry = (jnp.where(on, ret_t, next_ret), jnp.where(on, 0.0, pending + r_t))
        return carry, jnp.where(on, ret_t, 0.0)

    zeros = jnp.zeros(r.shape[:1], jnp.float32)
    returns = _reverse_scan(step, (zeros, zeros), r, m)
    adv = masked_whiten(returns, m) if whiten else returns
    return adv, returns


def outcome_token_rewards(rewards: Array, mask: Array) -> Array:
    """Places each row's scalar reward [B] on its last policy token -> [B,T] (zeros elsewhere,
    and an all-zero row when the row has no policy token)."""
    m = f32(mask) > 0
    t = m.shape[1]
    last = t - 1 - jnp.argmax(m[:, ::-1], axis=1)
    onehot = (jnp.arange(t)[None, :] == last[:, None]) & jnp.any(m, axis=1, keepdims=True)
    return onehot.astype(jnp.float32) * f32(rewards)[:, None]


# -- registry ------------------------------------------------------------------------------------


class AdvantageInputs(NamedTuple):
    """What every registered estimator reads.

    rewards: [B] sequence rewards (`rlx.rewards.compose`); the outcome estimators (grpo, drgrpo,
      rloo) use these, so a row without policy tokens still counts in its group.
    mask: [B,T] policy-token mask.  group: [B] int group ids (outcome estimators).
    token_rewards: [B,T] per-token rewards for gae / reinforce_pp; None places each row's reward
      on its last policy token (`outcome_token_rewards`).
    values: [B,T] critic values (gae).  kl: [B,T] KL to fold into the rewards (reinforce_pp).
    """

    rewards: Array
    mask: Array
    group: Array | None = None
    token_rewards: Array | None = None
    values: Array | None = None
    kl: Array | None = None

    def per_token_rewards(self) -> Array:
        if self.token_rewards is not None:
            return self.token_rewards
        return outcome_token_rewards(self.rewards, self.mask)


ADVANTAGE_ESTIMATORS: Registry = Registry("advantage estimator")


def _need(inputs: AdvantageInputs, field: str, name: str):
    value = getattr(inputs, field)
    if value is None:
        raise ValueError(f"advantage estimator {name!r} needs AdvantageInputs.{field}")
    return value


@ADVANTAGE_ESTIMATORS.register("grpo")
def _grpo(inputs: AdvantageInputs, *, norm_by_std: bool = True, eps: float = 1e-6):
    adv = grpo_advantages(inputs.rewards, inputs.mask, _need(inputs, "group", "grpo"),
                          norm_by_std=norm_by_std, eps=eps)
    return adv, adv


@ADVANTAGE_ESTIMATORS.register("drgrpo")
def _drgrpo(inputs: AdvantageInputs):
    adv = grpo_advantages(inputs.rewards, inputs.mask, _need(inputs, "group", "drgrpo"),
                          norm_by_std=False)
    return adv, adv


@ADVANTAGE_ESTIMATORS.register("rloo")
def _rloo(inputs: AdvantageInputs):
    adv = rloo_advantages(inputs.rewards, inputs.mask, _need(inputs, "group", "rloo"))
    return adv, adv


@ADVANTAGE_ESTIMATORS.register("gae")
def _gae(inputs: AdvantageInputs, *, gamma: float = 1.0, lam: float = 1.0, whiten: bool = True):
    return gae(inputs.per_token_rewards(), _need(inputs, "values", "gae"), inputs.mask, gamma=gamma,
               lam=lam, whiten=whiten)


@ADVANTAGE_ESTIMATORS.register("reinforce_pp")
def _reinforce_pp(inputs: AdvantageInputs, *, gamma: float = 1.0, kl_coef: float = 0.0,
                  whiten: bool = True):
    return reinforce_pp_advantages(inputs.per_token_rewards(), inputs.mask, gamma=gamma,
                                   kl=inputs.kl, kl_coef=kl_coef, whiten=whiten)


def compute_advantages(name: str, inputs: AdvantageInputs, **hparams) -> tuple[Array, Array]:
    """Looks up estimator `name` (`ADVANTAGE_ESTIMATORS.names()`) and applies it."""
    return ADVANTAGE_ESTIMATORS.get(name)(inputs, **hparams)
