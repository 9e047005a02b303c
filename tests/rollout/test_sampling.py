"""Token selection is correct in distribution, filters keep exactly the right tokens, and
greedy sampling equals an independent argmax decoding loop.

References: numpy softmax / sorting, and `Policy.logits` full causal forwards (no KV cache).
Chi-square critical values (scipy is not a dependency) at significance 1e-3: df=3: 16.266,
df=4: 18.467, df=9: 27.877, df=15: 37.697. A correct sampler fails each test with prob. 1e-3.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlx
from rlx import rollout

CHI2_CRIT = {3: 16.266, 4: 18.467, 9: 27.877, 15: 37.697}


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_keep(logits, top_k, top_p):
    """Reference kept set: top-k by value, then the smallest top-p prefix of the renormalized
    survivors (a token is kept when the mass strictly before it is < top_p)."""
    v = len(logits)
    order = np.argsort(-logits, kind="stable")
    keep = np.zeros(v, bool)
    k = v if top_k == 0 else top_k
    keep[order[:k]] = True
    if top_p < 1.0:
        p = np_softmax(np.where(keep, logits, -np.inf).astype(np.float64))
        before = 0.0
        kept_p = np.zeros(v, bool)
        for i in order:
            if not keep[i]:
                continue
            if before < top_p:
                kept_p[i] = True
            before += p[i]
        keep = kept_p
    return keep


def chi2(counts, probs):
    n = counts.sum()
    expected = n * probs
    assert expected.min() >= 5, "bins too small for a chi-square test"
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("top_k,top_p", [(1, 1.0), (5, 1.0), (0, 0.3), (0, 0.9), (7, 0.6),
                                         (40, 1.0)])
def test_filter_keeps_exactly_the_reference_set(top_k, top_p):
    logits = np.asarray(jax.random.normal(jax.random.key(0), (6, 40))) * 2.0
    out = np.asarray(rollout.filter_logits(jnp.asarray(logits), top_k, top_p))
    for row, got in zip(logits, out, strict=True):
        keep = np_keep(row, top_k, top_p)
        np.testing.assert_array_equal(np.isfinite(got), keep)
        np.testing.assert_array_equal(got[keep], row[keep])


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 1.0), (1.3, 4, 1.0),
                                                     (1.0, 0, 0.8)])
def test_select_tokens_matches_softmax(temperature, top_k, top_p):
    base = np.array([1.2, 0.3, -0.5, 2.0, 0.0, -1.0, 0.7, 1.5, -0.2, 0.4], np.float32)
    n = 40_000
    tok, lp = rollout.select_tokens(jnp.tile(base, (n, 1)), jax.random.key(7), temperature,
                                    top_k, top_p)
    tok, lp = np.asarray(tok), np.asarray(lp)
    scaled = base.astype(np.float64) / temperature
    keep = np_keep(scaled, top_k, top_p)
    probs = np_softmax(np.where(keep, scaled, -np.inf))
    counts = np.bincount(tok, minlength=len(base))
    # Filters: exactly the kept tokens occur (every kept token has >= 5% mass here).
    np.testing.assert_array_equal(counts > 0, keep)
    df = int(keep.sum()) - 1
    assert chi2(counts[keep], probs[keep]) < CHI2_CRIT[df]
    # Log-probs: of the tempered distribution before filtering (1e-5, float32).
    full_logp = scaled - np.log(np.exp(scaled).sum())
    np.testing.assert_allclose(lp, full_logp[tok], atol=1e-5)


def test_sample_first_token_distribution_matches_policy_softmax():
    # A 16-token vocabulary with large init so the next-token distribution is far from uniform.
    cfg = rlx.models.preset("tiny", vocab_size=16, d_model=32, n_layers=1, n_heads=2,
                            n_kv_heads=1, head_dim=16, d_ff=64, init_std=0.3)
    policy = rlx.models.Policy(cfg)
    params = policy.init(jax.random.key(3))
    context = jnp.array([3, 1, 4, 1, 5], jnp.int32)
    temperature = 1.5
    logits = np.asarray(policy.logits(params, context[None]))[0, -1].astype(np.float64)
    probs = np_softmax(logits / temperature)
    n = 4096  # smallest expected bin count: 12
    traj = rollout.sample(policy, params, jnp.tile(context, (n, 1)), jax.random.key(11),
                          temperature=temperature, max_new_tokens=1)
    tok = np.asarray(traj.tokens)[:, 5]
    assert np.asarray(traj.policy_mask)[:, 5].all()
    counts = np.bincount(tok, minlength=16)
    assert chi2(counts, probs) < CHI2_CRIT[15]
    np.testing.assert_allclose(np.asarray(traj.rollout_logprobs)[:, 5],
                               np.log(probs)[tok], atol=1e-5)


def test_greedy_equals_argmax_decoding(tiny):
    policy, params = tiny
    prompts = np.asarray(jax.random.randint(jax.random.key(5), (3, 6), 0, 512), np.int32)
    lengths = np.array([6, 2, 4], np.int32)
    new = 9
    traj = rollout.sample(policy, params, jnp.asarray(prompts), jax.random.key(0),
                          prompt_lengths=jnp.asarray(lengths), temperature=0.0,
                          max_new_tokens=new)
    # Reference: full causal forwards over a fixed-width buffer, argmax at each row's end.
    width = 6 + new
    buf = np.zeros((3, width), np.int32)
    for b in range(3):
        buf[b, :lengths[b]] = prompts[b, :lengths[b]]
    logits_fn = jax.jit(policy.logits)
    ref_lp = np.zeros((3, width), np.float32)
    for i in range(new):
        logits = np.asarray(logits_fn(params, jnp.asarray(buf)), np.float64)
        for b in range(3):
            pos = lengths[b] + i
            row = logits[b, pos - 1]
            buf[b, pos] = int(np.argmax(row))
            ref_lp[b, pos] = row[buf[b, pos]] - np.log(np.exp(row - row.max()).sum()) - row.max()
    np.testing.assert_array_equal(np.asarray(traj.tokens), buf)
    np.testing.assert_array_equal(np.asarray(traj.length), lengths + new)
    np.testing.assert_allclose(np.asarray(traj.rollout_logprobs), ref_lp, atol=1e-5)
    assert (np.asarray(traj.finish_reason) == rollout.FinishReason.LENGTH).all()
