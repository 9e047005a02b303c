"""Every registered algorithm runs under jit and vmap and agrees with its eager result.

(Correctness against the published formulas is in the other test files; this one checks that
the registered functions trace, compile and batch.)"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _algos_refs import agentic_mask

import rlx.algos as algos

B, T, G, R = 8, 12, 4, 3  # R replicas stacked on a leading axis for vmap
TOL = dict(rtol=1e-6, atol=1e-6)


def _replicas(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(R):
        mask = agentic_mask(rng, B, T).astype(np.float32)
        old = -rng.exponential(1.0, (B, T)).astype(np.float32)
        out.append(dict(
            mask=mask, old=old, lp=(old + rng.normal(0, 0.3, (B, T))).astype(np.float32),
            adv=rng.normal(size=(B, T)).astype(np.float32),
            rewards=rng.normal(size=B).astype(np.float32),
            values=rng.normal(size=(B, T)).astype(np.float32),
            kl=rng.normal(size=(B, T)).astype(np.float32),
            group=(np.arange(B) // G).astype(np.int32)))
    return out


def _stack(dicts):
    return {k: np.stack([d[k] for d in dicts]) for k in dicts[0]}


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


def _check(fn, reps):
    """jit(fn) == eager fn on one replica; vmap(fn) over replicas == jit(fn) per replica."""
    jitted = jax.jit(fn)
    per_replica = [jitted(r) for r in reps]
    jax.tree.map(_close, per_replica[0], fn(reps[0]))
    batched = jax.jit(jax.vmap(fn))(_stack(reps))
    for i, want in enumerate(per_replica):
        jax.tree.map(lambda a, b, i=i: _close(np.asarray(a)[i], b), batched, want)


@pytest.mark.parametrize("name", algos.ADVANTAGE_ESTIMATORS.names())
def test_advantage_estimators(name):
    def fn(r):
        inputs = algos.AdvantageInputs(r["rewards"], r["mask"], group=r["group"],
                                       values=r["values"], kl=r["kl"])
        return algos.compute_advantages(name, inputs)
    _check(fn, _replicas())


@pytest.mark.parametrize("name", algos.POLICY_LOSSES.names())
def test_policy_losses(name):
    def fn(r):
        loss_fn = lambda lp: algos.policy_loss(name, lp, r["old"], r["adv"], r["mask"],
                                               is_weights=r["values"])
        (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(r["lp"])
        return loss, metrics, grad
    _check(fn, _replicas(1))


@pytest.mark.parametrize("mode", algos.AGG_MODES.names())
def test_agg_modes(mode):
    _check(lambda r: jax.value_and_grad(lambda x: algos.agg_loss(x, r["mask"], mode))(r["adv"]),
           _replicas(1))


@pytest.mark.parametrize("name", algos.KL_ESTIMATORS.names())
def test_kl_estimators(name):
    _check(lambda r: jax.grad(lambda lp: jnp.sum(algos.kl_penalty(lp, r["old"], name)))(r["lp"]),
           _replicas(2))


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("mode", ["tis", "mis"])
def test_rollout_correction(level, mode):
    corr = functools.partial(algos.rollout_correction_weights, level=level, mode=mode)
    _check(lambda r: corr(r["lp"], r["old"], r["mask"]), _replicas(3))


def test_value_loss_and_entropy():
    _check(lambda r: algos.value_loss(r["values"], r["adv"], r["kl"], r["mask"]), _replicas(4))
    _check(lambda r: algos.entropy_from_logits(r["values"][..., None] * r["adv"][:, :, None]
                                               * jnp.arange(5.0), chunk_size=5), _replicas(4))
