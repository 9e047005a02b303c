"""mismatch_metrics vs a numpy reference over masked positions only."""

import jax
import numpy as np
import pytest

from rlx.diagnostics import mismatch_metrics

TOL = dict(rtol=1e-6, atol=1e-6)


def np_mismatch(lt, ls, mask):
    sel = mask > 0
    pt, ps = np.exp(lt[sel].astype(np.float64)), np.exp(ls[sel].astype(np.float64))
    log_rho = np.clip(lt[sel].astype(np.float64) - ls[sel], -20, 20)
    rho = np.exp(log_rho)
    return {
        "pearson": np.corrcoef(pt, ps)[0, 1],
        "max_abs_dp": np.abs(pt - ps).max(),
        "mean_abs_dp": np.abs(pt - ps).mean(),
        "k3_kl": np.mean(rho - 1 - log_rho),
        "frac_ratio_out": np.mean((rho < 0.5) | (rho > 2)),
        "n_tokens": sel.sum(),
    }


@pytest.fixture
def inputs():
    rng = np.random.default_rng(0)
    b, t = 6, 30
    ls = np.log(rng.uniform(0.01, 1.0, (b, t)))
    lt = np.minimum(ls + rng.normal(0, 0.3, (b, t)), 0.0)
    lt[:, ::7] = ls[:, ::7] + 1.2  # some ratios beyond 2
    mask = (rng.random((b, t)) < 0.6).astype(np.float32)
    mask[0] = 0  # an empty row
    # Garbage where the mask is off: must not leak into any metric.
    lt = np.where(mask > 0, lt, 5.0)
    ls = np.where(mask > 0, ls, -50.0)
    return lt.astype(np.float32), ls.astype(np.float32), mask


def test_matches_numpy_and_ignores_masked_positions(inputs):
    lt, ls, mask = inputs
    got = jax.jit(mismatch_metrics)(lt, ls, mask)
    want = np_mismatch(lt, ls, mask)
    assert set(got) == set(want)
    for k, v in want.items():
        np.testing.assert_allclose(float(got[k]), v, **TOL, err_msg=k)
        assert got[k].dtype == np.float32
    assert 0 < float(got["frac_ratio_out"]) < 1


def test_identical_logprobs(inputs):
    lt, _, mask = inputs
    got = mismatch_metrics(lt, lt, mask)
    np.testing.assert_allclose(float(got["pearson"]), 1.0, **TOL)
    for k in ("max_abs_dp", "mean_abs_dp", "k3_kl", "frac_ratio_out"):
        assert float(got[k]) == 0.0


def test_undefined_correlation_is_nan():
    got = mismatch_metrics(np.full((2, 3), -1.0), np.full((2, 3), -1.0), np.ones((2, 3)))
    assert np.isnan(float(got["pearson"]))
    got = mismatch_metrics(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)))
    assert float(got["n_tokens"]) == 0 and float(got["mean_abs_dp"]) == 0.0
