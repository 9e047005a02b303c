"""KL estimators and trainer/sampler rollout correction vs numpy references to 1e-6."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _algos_refs import agentic_mask, np_agg

import rlx.algos as algos

B, T = 10, 20
TOL = dict(rtol=1e-6, atol=1e-6)


@pytest.fixture
def logps():
    rng = np.random.default_rng(5)
    ref = -rng.exponential(1.0, (B, T))
    lp = ref + rng.normal(0, 0.5, (B, T))
    lp[0, :3] = [-30.0, -0.1, -25.0]  # far from ref: exercises k3's clamps
    ref[0, :3] = [-0.1, -30.0, -0.2]
    return lp.astype(np.float32), ref.astype(np.float32), agentic_mask(rng, B, T)


def np_kl(lp, ref, kind):
    x = lp.astype(np.float64) - ref
    if kind == "k1":
        return x
    if kind == "k2":
        return 0.5 * x * x
    y = np.clip(-x, -20, 20)
    return np.clip(np.exp(y) - y - 1, -10, 10)


@pytest.mark.parametrize("kind,alias", [("k1", "kl"), ("k2", "mse"), ("k3", "low_var_kl")])
def test_kl_estimators(logps, kind, alias):
    lp, ref, _ = logps
    want = np_kl(lp, ref, kind)
    for name in (kind, alias):
        np.testing.assert_allclose(np.asarray(algos.kl_penalty(lp, ref, name)), want, **TOL)
    if kind == "k3":
        got = np.asarray(algos.kl_penalty(lp, ref, kind))
        assert got.max() == 10.0  # the clamp is active on the extreme tokens


@pytest.mark.parametrize("kind", ["k1+", "k3+"])
def test_straight_through_estimators_take_k2_gradient(logps, kind):
    lp, ref, _ = logps
    val, grad = jax.value_and_grad(lambda x: jnp.sum(algos.kl_penalty(x, ref, kind)))(
        jnp.asarray(lp))
    np.testing.assert_allclose(float(val), np_kl(lp, ref, kind[:2]).sum(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad), lp.astype(np.float64) - ref, **TOL)


def test_kl_in_the_loss_with_aggregation(logps):
    lp, ref, mask = logps
    got = algos.agg_loss(algos.kl_penalty(lp, ref, "k3"), mask, "token-mean")
    np.testing.assert_allclose(float(got), np_agg(np_kl(lp, ref, "k3"), mask, "token-mean"),
                               **TOL)


# -- rollout correction --------------------------------------------------------------------------

def np_rho(lt, ls, mask, level):
    x = lt.astype(np.float64) - ls
    if level == "sequence":
        x = np.broadcast_to((x * mask).sum(-1, keepdims=True), x.shape)
    return np.exp(np.clip(x, -20, 20)) * mask, x


@pytest.fixture
def mismatch():
    rng = np.random.default_rng(7)
    mask = agentic_mask(rng, B, T)
    ls = -rng.exponential(1.0, (B, T))
    lt = ls + rng.normal(0, 0.6, (B, T)) * (rng.random((B, T)) < 0.5)
    lt[4, :] = ls[4, :] + 0.01  # a row whose sequence ratio stays in bounds
    return lt.astype(np.float32), ls.astype(np.float32), mask


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_tis(mismatch, level):
    lt, ls, mask = mismatch
    corr = algos.rollout_correction_weights(lt, ls, mask, level=level, mode="tis", threshold=2.0)
    rho, _ = np_rho(lt, ls, mask, level)
    np.testing.assert_allclose(np.asarray(corr.weights), np.minimum(rho, 2.0), **TOL)
    np.testing.assert_array_equal(np.asarray(corr.mask), mask)
    frac = ((rho > 2.0) * mask).sum() / mask.sum()
    np.testing.assert_allclose(float(corr.metrics["truncated_frac"]), frac, **TOL)
    assert frac > 0


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("lower", [None, 0.0])
def test_mis(mismatch, level, lower):
    lt, ls, mask = mismatch
    corr = algos.rollout_correction_weights(lt, ls, mask, level=level, mode="mis", threshold=2.0,
                                            threshold_lower=lower)
    rho, _ = np_rho(lt, ls, mask, level)
    lo = 0.5 if lower is None else lower
    keep = (rho >= lo) & (rho <= 2.0)
    want_mask = mask * keep
    np.testing.assert_array_equal(np.asarray(corr.mask), want_mask)
    np.testing.assert_allclose(np.asarray(corr.weights), rho * want_mask, **TOL)
    rejected = mask * (1 - want_mask)
    np.testing.assert_allclose(float(corr.metrics["rejected_frac"]),
                               rejected.sum() / mask.sum(), **TOL)
    rows = mask.sum(-1) > 0
    np.testing.assert_allclose(float(corr.metrics["seq_rejected_frac"]),
                               (rejected.sum(-1)[rows] > 0).mean(), **TOL)
    assert 0 < rejected.sum() < mask.sum()


def test_mis_rejected_tokens_leave_the_loss_normalizer(mismatch):
    lt, ls, mask = mismatch
    adv = np.random.default_rng(8).normal(size=(B, T)).astype(np.float32)
    corr = algos.rollout_correction_weights(lt, ls, mask, mode="mis", threshold=1.5)
    old = lt  # decoupled: PPO anchors on the trainer's recomputed log-probs
    lp = old + 0.05
    loss, _ = algos.policy_loss("ppo", lp, old, adv, corr.mask, is_weights=corr.weights)
    rho, _ = np_rho(lt, ls, mask, "token")
    kept = mask * ((rho >= 1 / 1.5) & (rho <= 1.5))
    r = np.exp(0.05)
    per_tok = np.maximum(-adv * r, -adv * np.clip(r, 0.8, 1.2))
    per_tok = np.where(adv < 0, np.minimum(per_tok, -adv * 3.0), per_tok) * rho
    np.testing.assert_allclose(float(loss), (per_tok * kept).sum() / kept.sum(), **TOL)


def test_correction_errors(mismatch):
    lt, ls, mask = mismatch
    with pytest.raises(ValueError, match="allowed"):
        algos.rollout_correction_weights(lt, ls, mask, mode="icepop")
    with pytest.raises(ValueError, match="allowed"):
        algos.rollout_correction_weights(lt, ls, mask, level="geo")
    with pytest.raises(ValueError, match="threshold_lower"):
        algos.rollout_correction_weights(lt, ls, mask, mode="mis", threshold_lower=3.0)


def test_select_old_logprobs(mismatch):
    lt, ls, _ = mismatch
    np.testing.assert_array_equal(np.asarray(algos.select_old_logprobs("sampler", sampler=ls)),
                                  ls)
    got = algos.select_old_logprobs(algos.OldLogprobs.TRAINER, sampler=ls, trainer=lt)
    np.testing.assert_array_equal(np.asarray(got), lt)
    # stop-gradient: the old log-probs never carry gradients into the loss
    g = jax.grad(lambda x: jnp.sum(algos.select_old_logprobs("trainer", sampler=ls, trainer=x)))(
        jnp.asarray(lt))
    assert not np.any(np.asarray(g))
    with pytest.raises(ValueError, match="sampler"):
        algos.select_old_logprobs("trainer", sampler=ls)
    with pytest.raises(ValueError, match="allowed"):
        algos.select_old_logprobs("vllm", sampler=ls)
