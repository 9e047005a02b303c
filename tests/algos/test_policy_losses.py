"""Policy/value losses, aggregation and entropy vs numpy references; gradients vs analytic ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _algos_refs import agentic_mask, np_agg

import rlx.algos as algos

B, T = 10, 20
TOL = dict(rtol=1e-6, atol=1e-6)
MODES = ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


@pytest.fixture
def batch():
    rng = np.random.default_rng(1)
    mask = agentic_mask(rng, B, T)
    old = -rng.exponential(1.0, (B, T)).astype(np.float32)
    lp = (old + rng.normal(0, 0.4, (B, T))).astype(np.float32)  # ratios spread past the clips
    adv = rng.normal(0, 1, (B, T)).astype(np.float32)
    return lp, old, adv, mask


# -- numpy references (the published formulas) ---------------------------------------------------

def np_ppo(lp, old, adv, lo, hi, c):
    r = np.exp(np.clip(lp.astype(np.float64) - old, -20, 20))
    l1, l2 = -adv * r, -adv * np.clip(r, 1 - lo, 1 + hi)
    clip1 = np.maximum(l1, l2)
    return np.where(adv < 0, np.minimum(clip1, -adv * c), clip1), r, l1, l2, clip1


def np_gspo_ratio(lp, old, mask):
    n = np.maximum(mask.sum(-1), 1)
    return np.exp(np.minimum(((lp.astype(np.float64) - old) * mask).sum(-1) / n, 10.0))


# -- aggregation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_agg_loss(batch, mode):
    loss = batch[2]
    mask = batch[3]
    got = algos.agg_loss(loss, mask, mode)
    np.testing.assert_allclose(float(got), np_agg(loss, mask, mode), **TOL)


def test_agg_loss_global_normalizers(batch):
    loss, mask = batch[2], batch[3]
    np.testing.assert_allclose(float(algos.agg_loss(loss, mask, "token-mean", num_tokens=500.0)),
                               (loss * mask).sum() / 500.0, **TOL)
    rows = [(loss[i] * mask[i]).sum() for i in range(B) if mask[i].sum() > 0]
    np.testing.assert_allclose(
        float(algos.agg_loss(loss, mask, "seq-mean-token-sum", num_seqs=64)), sum(rows) / 64,
        **TOL)
    np.testing.assert_allclose(
        float(algos.agg_loss(loss, mask, "seq-mean-token-sum-norm", horizon=4096)),
        sum(rows) / 4096, **TOL)
    # verl's value on a hand-made batch: rows' token sums 3 and 5 (the empty row adds nothing),
    # summed, over a horizon of 4 -- not their mean over 4 (1.0).
    hand = algos.agg_loss(jnp.array([[1.0, 2.0, 9.0], [5.0, 7.0, 7.0], [4.0, 4.0, 4.0]]),
                          jnp.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]]),
                          "seq-mean-token-sum-norm", horizon=4)
    assert float(hand) == 2.0


def test_agg_loss_empty_mask_is_zero_and_unknown_mode_lists_modes():
    for mode in MODES:
        assert float(algos.agg_loss(jnp.ones((2, 3)), jnp.zeros((2, 3)), mode)) == 0.0
    with pytest.raises(KeyError, match="seq-mean-token-mean"):
        algos.agg_loss(jnp.ones((2, 3)), jnp.ones((2, 3)), "seq-mean")


# -- PPO -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_ppo_matches_numpy(batch, mode):
    lp, old, adv, mask = batch
    loss, metrics = algos.policy_loss("ppo", lp, old, adv, mask, clip_low=0.2, clip_high=0.28,
                                      clip_c=3.0, loss_agg_mode=mode)
    want, r, l1, l2, clip1 = np_ppo(lp, old, adv, 0.2, 0.28, 3.0)
    np.testing.assert_allclose(float(loss), np_agg(want, mask, mode), **TOL)
    mmean = lambda x: (x * mask).sum() / mask.sum()
    expect = {
        "clipfrac": mmean(l2 > l1),
        "clipfrac_high": mmean((adv > 0) & (r > 1.28)),
        "clipfrac_low": mmean((adv < 0) & (r < 0.8)),
        "clipfrac_dual": mmean((clip1 > -adv * 3.0) & (adv < 0)),
        "approx_kl": mmean(old - lp),
        "ratio_mean": mmean(r),
        "ratio_max": r[mask > 0].max(),
        "ratio_min": r[mask > 0].min(),
    }
    for k, v in expect.items():
        np.testing.assert_allclose(float(metrics[k]), v, **TOL, err_msg=k)
    assert expect["clipfrac_high"] > 0 and expect["clipfrac_low"] > 0


def test_ppo_without_dual_clip_and_with_is_weights(batch):
    lp, old, adv, mask = batch
    w = np.random.default_rng(2).uniform(0.5, 2.0, (B, T)).astype(np.float32)
    loss, _ = algos.ppo_loss(lp, old, adv, mask, clip_c=None, is_weights=w)
    r = np.exp(lp.astype(np.float64) - old)
    want = np.maximum(-adv * r, -adv * np.clip(r, 0.8, 1.2)) * w
    np.testing.assert_allclose(float(loss), np_agg(want, mask, "token-mean"), **TOL)
    with pytest.raises(ValueError, match="clip_c"):
        algos.ppo_loss(lp, old, adv, mask, clip_c=0.9)


def test_ppo_gradient_is_zero_where_clipped_on_the_pushed_side(batch):
    lp, old, adv, mask = batch
    lo, hi, c = 0.2, 0.28, 1.5
    grad = jax.grad(lambda x: algos.ppo_loss(x, old, adv, mask, clip_low=lo, clip_high=hi,
                                             clip_c=c)[0])(jnp.asarray(lp))
    grad = np.asarray(grad)
    r = np.exp(lp.astype(np.float64) - old)
    pushed_up = (adv > 0) & (r > 1 + hi)
    pushed_down = (adv < 0) & (r < 1 - lo)
    dual = (adv < 0) & (r > c)
    dropped = pushed_up | pushed_down | dual
    on = mask > 0
    assert (dropped & on & pushed_up).any() and (dropped & on & pushed_down).any()
    assert (dropped & on & dual).any()
    np.testing.assert_array_equal(grad[dropped], 0.0)
    # Everywhere else: d/dlogp of -A r, over the token count.
    want = np.where(dropped, 0.0, -adv * r) * mask / mask.sum()
    np.testing.assert_allclose(grad, want, **TOL)


# -- GSPO ----------------------------------------------------------------------------------------

def test_gspo_matches_numpy_and_analytic_gradient(batch):
    lp, old, adv, mask = batch
    lo, hi = 0.05, 0.08
    fn = lambda x: algos.policy_loss("gspo", x, old, adv, mask, clip_low=lo, clip_high=hi)
    (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(lp))
    s = np_gspo_ratio(lp, old, mask)[:, None]
    l1, l2 = -adv * s, -adv * np.clip(s, 1 - lo, 1 + hi)
    np.testing.assert_allclose(float(loss), np_agg(np.maximum(l1, l2), mask,
                                                   "seq-mean-token-mean"), **TOL)
    rows = mask.sum(-1) > 0
    np.testing.assert_allclose(float(metrics["ratio_mean"]), s[rows, 0].mean(), **TOL)
    np.testing.assert_allclose(float(metrics["clipfrac"]),
                               ((l2 > l1) * mask).sum() / mask.sum(), **TOL)
    # GSPO-token gradient: -A s_i per unclipped token, / (row length * rows with tokens).
    clipped = l2 > l1
    assert (clipped & (mask > 0)).any() and (~clipped & (mask > 0)).any()
    per_row = np.maximum(mask.sum(-1, keepdims=True), 1) * rows.sum()
    want = np.where(clipped, 0.0, -adv * s) * mask / per_row
    np.testing.assert_allclose(np.asarray(grad), want, **TOL)


# -- CISPO ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("lo,hi", [(1.0, 0.2), (0.2, 0.28)])
def test_cispo_matches_numpy_and_keeps_every_gradient(batch, lo, hi):
    lp, old, adv, mask = batch
    fn = lambda x: algos.policy_loss("cispo", x, old, adv, mask, clip_low=lo, clip_high=hi)
    (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(lp))
    r = np.exp(np.clip(lp.astype(np.float64) - old, -20, 20))
    w = np.clip(r, 1 - lo, 1 + hi)
    np.testing.assert_allclose(float(loss), np_agg(-w * adv * lp, mask, "token-mean"), **TOL)
    # The analytic gradient: clipped weight x advantage x grad(logp), for every token ...
    want = -w * adv * mask / mask.sum()
    np.testing.assert_allclose(np.asarray(grad), want, **TOL)
    # ... including the tokens PPO drops.
    ppo_dropped = (((adv > 0) & (r > 1 + hi)) | ((adv < 0) & (r < 1 - lo))) & (mask > 0)
    assert ppo_dropped.any() and np.all(np.asarray(grad)[ppo_dropped] != 0)
    mmean = lambda x: (x * mask).sum() / mask.sum()
    np.testing.assert_allclose(float(metrics["clipfrac"]), mmean(w != r), **TOL)
    np.testing.assert_allclose(float(metrics["clipfrac_high"]), mmean(r > 1 + hi), **TOL)
    np.testing.assert_allclose(float(metrics["clipfrac_low"]), mmean(r < 1 - lo), **TOL)
    if lo >= 1.0:
        assert float(metrics["clipfrac_low"]) == 0.0  # no lower bound (M1)


def test_unknown_policy_loss_lists_known(batch):
    with pytest.raises(KeyError, match="cispo"):
        algos.policy_loss("grpo", *batch)


# -- value loss and entropy ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_value_loss(batch, mode):
    rng = np.random.default_rng(3)
    mask = batch[3]
    v, ret, old = (rng.normal(size=(B, T)).astype(np.float32) for _ in range(3))
    loss, metrics = algos.value_loss(v, ret, old, mask, clip=0.5, loss_agg_mode=mode)
    vc = np.clip(v, old - 0.5, old + 0.5)
    l1, l2 = (v - ret) ** 2.0, (vc - ret) ** 2.0
    np.testing.assert_allclose(float(loss), 0.5 * np_agg(np.maximum(l1, l2), mask, mode), **TOL)
    np.testing.assert_allclose(float(metrics["vf_clipfrac"]),
                               ((l2 > l1) * mask).sum() / mask.sum(), **TOL)


def test_entropy_from_logits_and_chunking():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 3, (3, 7, 50)).astype(np.float32)
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = -(p * np.log(p)).sum(-1)
    np.testing.assert_allclose(np.asarray(algos.entropy_from_logits(logits)), want, **TOL)
    chunked = algos.entropy_from_logits(logits, chunk_size=3)
    np.testing.assert_allclose(np.asarray(chunked), want, **TOL)
    low = jnp.asarray(logits, jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(algos.entropy_from_logits(low, chunk_size=2)),
                                  np.asarray(algos.entropy_from_logits(low)))
    assert algos.entropy_from_logits(low).dtype == jnp.float32
