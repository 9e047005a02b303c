"""Advantage estimators vs independent numpy references (float64 loops) to 1e-6."""

import numpy as np
import pytest
from _algos_refs import (
    agentic_mask,
    np_gae,
    np_gae_verl_loop,
    np_masked_whiten,
    np_returns,
)

import rlx.algos as algos

B, T, G = 12, 24, 4
TOL = dict(rtol=1e-6, atol=1e-6)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _np_groups(scores, ids):
    groups = {}
    for i, g in enumerate(ids):
        groups.setdefault(int(g), []).append(i)
    return groups


def np_grpo(scores, ids, norm_by_std, eps=1e-6):
    out = np.zeros_like(scores, dtype=np.float64)
    for members in _np_groups(scores, ids).values():
        s = scores[members].astype(np.float64)
        if len(members) == 1:
            mean, std = 0.0, 1.0
        else:
            mean, std = s.mean(), s.std(ddof=1)
        out[members] = (s - mean) / (std + eps) if norm_by_std else s - mean
    return out


def np_rloo(scores, ids):
    out = np.zeros_like(scores, dtype=np.float64)
    for members in _np_groups(scores, ids).values():
        for i in members:
            others = [scores[j] for j in members if j != i]
            out[i] = scores[i] - np.mean(others) if others else scores[i]
    return out


@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "ids"])
def test_grpo(rng, norm_by_std, layout):
    mask = agentic_mask(rng, B, T)
    rewards = rng.integers(0, 2, B).astype(np.float32) + rng.normal(0, 0.1, B).astype(np.float32)
    rewards[:G] = 1.0  # a group with zero spread: std 0, advantage 0
    if layout == "contiguous":
        ids, group = np.arange(B) // G, G
    else:  # shuffled ids, uneven groups, and a singleton group
        ids = np.array([3, 1, 3, 7, 1, 1, 3, 9, 7, 1, 3, 7])
        group = ids
    want = np_grpo(rewards, ids, norm_by_std)[:, None] * mask
    got = algos.grpo_advantages(rewards, mask, group, norm_by_std=norm_by_std)
    np.testing.assert_allclose(np.asarray(got), want, **TOL)
    assert got.dtype == np.float32


def test_grpo_sums_token_rewards_like_verl(rng):
    mask = agentic_mask(rng, B, T)
    token_rewards = rng.normal(size=(B, T)).astype(np.float32) * mask
    got = algos.grpo_advantages(token_rewards, mask, G)
    want = np_grpo(token_rewards.sum(-1), np.arange(B) // G, True)[:, None] * mask
    np.testing.assert_allclose(np.asarray(got), want, **TOL)


@pytest.mark.parametrize("layout", ["contiguous", "ids"])
def test_rloo(rng, layout):
    mask = agentic_mask(rng, B, T)
    rewards = rng.normal(size=B).astype(np.float32)
    ids = np.arange(B) // G if layout == "contiguous" else np.array(
        [0, 5, 0, 2, 5, 5, 0, 8, 2, 5, 0, 2])
    group = G if layout == "contiguous" else ids
    got = algos.rloo_advantages(rewards, mask, group)
    np.testing.assert_allclose(np.asarray(got), np_rloo(rewards, ids)[:, None] * mask, **TOL)


def test_group_size_must_divide_batch():
    with pytest.raises(ValueError, match="does not divide"):
        algos.grpo_advantages(np.zeros(6), np.ones((6, 3)), 4)


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.9, 0.8)])
@pytest.mark.parametrize("whiten", [False, True])
def test_gae_matches_compressed_textbook_gae(rng, gamma, lam, whiten):
    mask = agentic_mask(rng, B, T)
    values = rng.normal(size=(B, T)).astype(np.float32)
    rewards = (rng.normal(size=(B, T)) * (rng.random((B, T)) < 0.3)).astype(np.float32)
    adv, ret = algos.gae(rewards, values, mask, gamma=gamma, lam=lam, whiten=whiten)
    want_adv, want_ret = np_gae(rewards, values, mask, gamma, lam)
    if whiten:
        want_adv = np_masked_whiten(want_adv, mask)
    np.testing.assert_allclose(np.asarray(adv), want_adv, **TOL)
    np.testing.assert_allclose(np.asarray(ret), want_ret, **TOL)
    assert np.all(np.asarray(adv)[mask == 0] == 0)


def test_gae_matches_verl_loop_when_rewards_sit_on_policy_tokens(rng):
    mask = agentic_mask(rng, B, T)
    values = rng.normal(size=(B, T)).astype(np.float32)
    rewards = rng.normal(size=(B, T)).astype(np.float32) * mask
    adv, ret = algos.gae(rewards, values, mask, gamma=0.95, lam=0.9, whiten=False)
    want = np_gae_verl_loop(rewards, values, mask, 0.95, 0.9)
    np.testing.assert_allclose(np.asarray(adv), want * mask, **TOL)
    np.testing.assert_allclose(np.asarray(ret), (want + values) * mask, **TOL)


def test_gae_observation_gap_does_not_break_the_chain():
    # policy, obs, obs, policy: the first policy token sees the second one's value and reward.
    mask = np.array([[1, 0, 0, 1.0]])
    values = np.array([[0.5, 9.0, 9.0, 0.25]], np.float32)
    rewards = np.array([[0.0, 0.0, 0.0, 1.0]], np.float32)
    adv, _ = algos.gae(rewards, values, mask, gamma=0.5, lam=0.5, whiten=False)
    a1 = 1.0 - 0.25
    a0 = 0.0 + 0.5 * 0.25 - 0.5 + 0.25 * a1
    np.testing.assert_allclose(np.asarray(adv)[0], [a0, 0, 0, a1], **TOL)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_pp(rng, gamma):
    mask = agentic_mask(rng, B, T)
    rewards = (rng.normal(size=(B, T)) * (rng.random((B, T)) < 0.3)).astype(np.float32)
    kl = rng.normal(size=(B, T)).astype(np.float32)
    adv, ret = algos.reinforce_pp_advantages(rewards, mask, gamma=gamma, kl=kl, kl_coef=0.1)
    want_ret = np_returns(rewards - 0.1 * kl * mask, mask, gamma)
    np.testing.assert_allclose(np.asarray(ret), want_ret, **TOL)
    np.testing.assert_allclose(np.asarray(adv), np_masked_whiten(want_ret, mask), **TOL)


def test_reinforce_pp_matches_verl_loop_on_contiguous_responses(rng):
    # verl resets the running return at every masked position; with no observation gaps that is
    # the same as rlx's skipping.
    b, t = 6, 16
    mask = np.zeros((b, t))
    for i, (s, e) in enumerate([(2, 16), (3, 9), (1, 2), (4, 4), (2, 11), (5, 15)]):
        mask[i, s:e] = 1
    rewards = rng.normal(size=(b, t)).astype(np.float32) * mask
    running = np.zeros(b)
    want = np.zeros((b, t))
    for s in reversed(range(t)):
        running = rewards[:, s] + 0.9 * running
        want[:, s] = running
        running = running * mask[:, s]
    adv, ret = algos.reinforce_pp_advantages(rewards, mask, gamma=0.9)
    np.testing.assert_allclose(np.asarray(ret), want * mask, **TOL)
    np.testing.assert_allclose(np.asarray(adv), np_masked_whiten(want, mask), **TOL)


def test_outcome_token_rewards(rng):
    mask = agentic_mask(rng, B, T)
    rewards = rng.normal(size=B).astype(np.float32)
    got = np.asarray(algos.outcome_token_rewards(rewards, mask))
    want = np.zeros((B, T))
    for i in range(B):
        pos = np.flatnonzero(mask[i])
        if len(pos):
            want[i, pos[-1]] = rewards[i]
    np.testing.assert_allclose(got, want, **TOL)


def test_registry_adapters_and_errors(rng):
    mask = agentic_mask(rng, B, T)
    rewards = rng.normal(size=B).astype(np.float32)
    inputs = algos.AdvantageInputs(rewards, mask, group=np.arange(B) // G)
    adv, _ = algos.compute_advantages("drgrpo", inputs)
    want = np_grpo(rewards, np.arange(B) // G, False)[:, None] * mask
    np.testing.assert_allclose(np.asarray(adv), want, **TOL)
    # gae without token_rewards: the reward sits on each row's last policy token.
    values = rng.normal(size=(B, T)).astype(np.float32)
    adv, _ = algos.compute_advantages("gae", inputs._replace(values=values), gamma=0.9, lam=0.7,
                                      whiten=False)
    want, _ = np_gae(np.asarray(algos.outcome_token_rewards(rewards, mask)), values, mask, 0.9,
                     0.7)
    np.testing.assert_allclose(np.asarray(adv), want, **TOL)
    with pytest.raises(ValueError, match="values"):
        algos.compute_advantages("gae", inputs)
    with pytest.raises(KeyError, match="known"):
        algos.compute_advantages("grpoo", inputs)
