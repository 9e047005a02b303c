"""`rlx.rollout.sample`: rollout log-probs equal the trainer's, masks and finish reasons follow
the layout, top-k/top-p act inside the decode loop, the head-dtype knob produces the precision gap,
same key -> same tokens, and the sharded sampler equals the single-device one.

References: `Policy.token_logprobs` / `Policy.logits` (full causal forward, no KV cache) and numpy.
Tolerances: float32 model and head, log-probs within 1e-5.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import rlx
from rlx import rollout
from rlx.rollout import FinishReason

STOP = tuple(range(400, 464))  # 1/8 of the vocabulary, so rows stop at different steps
TEMP, TOP_K, TOP_P, NEW = 0.8, 40, 0.95, 16
LENGTHS = np.array([7, 3, 5, 1, 8, 2, 6, 4], np.int32)


@pytest.fixture(scope="module")
def prompts():
    return np.asarray(jax.random.randint(jax.random.key(1), (8, 8), 0, 400), np.int32)


@pytest.fixture(scope="module")
def traj(tiny, prompts):
    policy, params = tiny
    return rollout.sample(policy, params, jnp.asarray(prompts), jax.random.key(42),
                          prompt_lengths=jnp.asarray(LENGTHS), temperature=TEMP, top_k=TOP_K,
                          top_p=TOP_P, stop_tokens=STOP, max_new_tokens=NEW)


def test_layout_masks_and_finish_reasons(traj, prompts):
    toks, mask = np.asarray(traj.tokens), np.asarray(traj.policy_mask)
    length, reason = np.asarray(traj.length), np.asarray(traj.finish_reason)
    assert toks.shape == (8, 8 + NEW)
    np.testing.assert_array_equal(np.asarray(traj.prompt_length), LENGTHS)
    for b in range(8):
        p, n = LENGTHS[b], length[b]
        np.testing.assert_array_equal(toks[b, :p], prompts[b, :p])
        expected_mask = (np.arange(toks.shape[1]) >= p) & (np.arange(toks.shape[1]) < n)
        np.testing.assert_array_equal(mask[b], expected_mask)
        assert (toks[b, n:] == 0).all()
        new = toks[b, p:n]
        assert 1 <= len(new) <= NEW
        assert not np.isin(new[:-1], STOP).any(), "sampling continued past a stop token"
        if np.isin(new[-1], STOP):
            assert reason[b] == FinishReason.STOP
        else:
            assert reason[b] == FinishReason.LENGTH and len(new) == NEW
    np.testing.assert_array_equal(np.asarray(traj.truncated), reason == FinishReason.LENGTH)
    assert set(reason) == {FinishReason.STOP, FinishReason.LENGTH}, "want both kinds of row"
    assert (np.asarray(traj.rounds) == 1).all()
    # Decode statistics: one step per token after the first, idle rows counted.
    steps = int(traj.stats["decode_steps"])
    assert steps == (length - LENGTHS).max() - 1
    assert int(traj.stats["idle_slots"]) == 8 * steps - ((length - LENGTHS) - 1).sum()


def test_rollout_logprobs_equal_trainer_logprobs(tiny, traj):
    policy, params = tiny
    ref = np.asarray(policy.token_logprobs(params, traj.tokens, temperature=TEMP))
    got, mask = np.asarray(traj.rollout_logprobs), np.asarray(traj.policy_mask)
    np.testing.assert_allclose(got[mask], ref[mask], atol=1e-5)
    assert (got[~mask] == 0).all()


def test_top_k_top_p_act_inside_the_decode_loop(tiny, traj):
    policy, params = tiny
    logits = np.asarray(policy.logits(params, traj.tokens), np.float64) / TEMP
    toks, mask = np.asarray(traj.tokens), np.asarray(traj.policy_mask)
    for b, t in zip(*np.nonzero(mask), strict=True):
        row = logits[b, t - 1]
        order = np.argsort(-row, kind="stable")
        rank = int(np.nonzero(order == toks[b, t])[0][0])
        assert rank < TOP_K
        top = row[order[:TOP_K]]
        p = np.exp(top - top.max())
        p /= p.sum()
        assert p[:rank].sum() < TOP_P  # inside the nucleus of the top-k survivors


def test_same_key_same_tokens_other_key_other_tokens(tiny, traj, prompts):
    policy, params = tiny
    kw = dict(prompt_lengths=jnp.asarray(LENGTHS), temperature=TEMP, top_k=TOP_K, top_p=TOP_P,
              stop_tokens=STOP, max_new_tokens=NEW)
    again = rollout.sample(policy, params, jnp.asarray(prompts), jax.random.key(42), **kw)
    np.testing.assert_array_equal(np.asarray(again.tokens), np.asarray(traj.tokens))
    other = rollout.sample(policy, params, jnp.asarray(prompts), jax.random.key(43), **kw)
    assert (np.asarray(other.tokens) != np.asarray(traj.tokens)).any()


def test_head_dtype_knob_produces_the_precision_gap(tiny, prompts):
    policy, params = tiny
    traj = rollout.sample(policy, params, jnp.asarray(prompts), jax.random.key(5),
                          prompt_lengths=jnp.asarray(LENGTHS), max_new_tokens=NEW,
                          head_dtype="bfloat16")
    mask = np.asarray(traj.policy_mask)
    got = np.asarray(traj.rollout_logprobs)[mask]
    trainer_f32 = np.asarray(policy.token_logprobs(params, traj.tokens))[mask]
    trainer_bf16 = np.asarray(policy.token_logprobs(params, traj.tokens,
                                                    head_dtype="bfloat16"))[mask]
    gap_f32, gap_bf16 = np.abs(got - trainer_f32), np.abs(got - trainer_bf16)
    # The bf16 sampler is measurably off a float32 trainer (here: max ~2e-3, mean ~5e-4) ...
    assert gap_f32.max() > 1e-3 and gap_f32.mean() > 1e-4
    # ... and matches a bf16-head trainer: the gap is the head's precision, not the cache. Not to
    # 1e-5: the ~1e-6 float32 differences between cached and full-forward hidden states can move
    # a single logit across a bf16 rounding boundary (one bf16 ulp ~ 1e-5 in a log-prob).
    assert gap_bf16.max() < 1e-4
    assert gap_f32.mean() > 100 * gap_bf16.mean()


def test_sharded_sampler_equals_single_device(tiny, traj, prompts):
    policy, params = tiny
    mesh = rlx.sharding.make_mesh((4, 1, 2))
    sharded = rlx.models.Policy(policy.cfg, mesh=mesh, rules=rlx.sharding.DEFAULT_RULES)
    sparams, _ = rlx.sharding.init_sharded(sharded, jax.random.key(0), mesh)
    out = rollout.sample(sharded, sparams, jnp.asarray(prompts), jax.random.key(42),
                         prompt_lengths=jnp.asarray(LENGTHS), temperature=TEMP, top_k=TOP_K,
                         top_p=TOP_P, stop_tokens=STOP, max_new_tokens=NEW)
    assert rlx.sharding.num_shards(out.tokens) == 4  # batch split over the data axis
    assert rlx.sharding.num_shards(out.rollout_logprobs) == 4
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(traj.tokens))
    np.testing.assert_array_equal(np.asarray(out.length), np.asarray(traj.length))
    np.testing.assert_allclose(np.asarray(out.rollout_logprobs),
                               np.asarray(traj.rollout_logprobs), atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 4"):
        rollout.sample(sharded, sparams, jnp.asarray(prompts[:6]), jax.random.key(0))


def test_rollout_kwargs_from_config():
    section = ml_collections.ConfigDict(dict(
        temperature=0.7, top_k=0, top_p=0.9, max_new_tokens=32, max_rounds=4, max_len=256,
        head_dtype=ml_collections.FieldReference(None, field_type=str), lr=1e-6))
    kw = rollout.rollout_kwargs(section)
    assert kw == dict(temperature=0.7, top_k=0, top_p=0.9, max_new_tokens=32, max_rounds=4,
                      max_len=256)
    section.head_dtype = "bfloat16"
    assert rollout.rollout_kwargs(section)["head_dtype"] == "bfloat16"
    section.head_dtype = "fp8"
    with pytest.raises(ValueError, match="rollout.head_dtype"):
        rollout.rollout_kwargs(section)
    with pytest.raises(ValueError, match="prompt_lengths"):
        rollout.sample(rlx.models.Policy(rlx.models.preset("tiny")), None,
                       jnp.zeros((2, 8), jnp.int32), jax.random.key(0),
                       prompt_lengths=jnp.array([0, 3]))
    with pytest.raises(ValueError, match="rollout.max_len"):
        rollout.sample(rlx.models.Policy(rlx.models.preset("tiny")), None,
                       jnp.zeros((2, 8), jnp.int32), jax.random.key(0), max_len=8)
