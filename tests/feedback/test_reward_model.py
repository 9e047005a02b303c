"""The Bradley–Terry reward model: its loss against the published formula in numpy, scores read
at each row's last token, a fit that recovers a known preference, save/load, and pairs built
from a store (ties left out, flags turned into preferences)."""

import jax
import numpy as np
import pytest

from rlx.feedback import reward_model as R
from rlx.feedback import store as S
from rlx.models import ModelConfig

CFG = ModelConfig(vocab_size=32, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
                  d_ff=64, max_len=64)


def known_pairs(n: int, seed: int) -> R.PreferencePairs:
    """Random rows of ids 2..31; the chosen row of a pair ends in id 1, the rejected one in 0."""
    rng = np.random.default_rng(seed)
    rows, lengths = [], []
    for end in (1, 0):
        length = rng.integers(4, 12, size=n)
        r = rng.integers(2, 32, size=(n, 16)).astype(np.int32)
        r[np.arange(n), length - 1] = end
        r[np.arange(16)[None, :] >= length[:, None]] = 0
        rows.append(r)
        lengths.append(length.astype(np.int32))
    return R.PreferencePairs(rows[0], lengths[0], rows[1], lengths[1])


def test_loss_is_the_bradley_terry_nll_and_scores_read_the_last_token():
    rm = R.RewardModel.from_policy(CFG)
    params = rm.critic.init(jax.random.key(1))        # a random head: scores differ
    pairs = known_pairs(6, seed=0)
    sc = np.asarray(rm.scores(params, pairs.chosen, pairs.chosen_length))
    sr = np.asarray(rm.scores(params, pairs.rejected, pairs.rejected_length))
    nll, metrics = rm.loss(params, pairs)
    want = -np.mean(np.log(1.0 / (1.0 + np.exp(-(sc - sr)))))
    np.testing.assert_allclose(float(nll), want, rtol=1e-5)
    assert float(metrics["accuracy"]) == np.mean(sc > sr)
    # The score of a row is the critic's value after its whole sequence: entry `length` of
    # `Critic.values` on the row with one more (any) token appended.
    row = np.concatenate([pairs.chosen, np.zeros((6, 1), np.int32)], axis=1)
    values = np.asarray(rm.critic.values(params, row))
    np.testing.assert_allclose(sc, values[np.arange(6), pairs.chosen_length], rtol=1e-5,
                               atol=1e-6)
    # Padding after the last token does not change a score.
    padded = np.where(np.arange(16)[None] >= pairs.chosen_length[:, None], 7, pairs.chosen)
    np.testing.assert_allclose(rm.scores(params, padded, pairs.chosen_length), sc, rtol=1e-5)


def test_fit_recovers_a_known_preference_and_round_trips(tmp_path):
    rm = R.RewardModel.from_policy(CFG)
    params = rm.init(jax.random.key(0))
    assert float(rm.loss(params, known_pairs(8, 1))[0]) == pytest.approx(np.log(2), rel=1e-5)
    params, history = R.fit(rm, params, known_pairs(256, 2), steps=150, batch_size=32, lr=3e-3,
                            heldout=0.25, eval_every=50)
    assert history[-1]["heldout_accuracy"] >= 0.95, history
    assert history[-1]["heldout_nll"] < 0.2 < np.log(2)
    R.save(str(tmp_path / "rm"), rm, params)
    rm2, params2 = R.load(str(tmp_path / "rm"))
    test = known_pairs(16, 3)
    np.testing.assert_array_equal(rm2.scores(params2, test.chosen, test.chosen_length),
                                  rm.scores(params, test.chosen, test.chosen_length))
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        R.load(str(tmp_path))


def test_pairs_from_store_skip_ties_and_turn_flags_into_preferences(tmp_path):
    store = S.EpisodeStore(str(tmp_path / "f.sqlite"))
    rec = lambda toks: S.EpisodeRecord(run="r", step=0, task="t", prompt="", rounds=[],
                                       reward=0.0, components={}, info={},
                                       tokens=np.array(toks, np.int32),
                                       policy_mask=np.ones(len(toks), bool))
    a, b, c = store.add_episodes([rec([1, 2]), rec([1, 3, 4]), rec([1, 5])])
    with pytest.raises(ValueError, match="no judgement with a preference"):
        R.pairs_from_store(store)
    store.judge(a, b, "second", rater="x")                              # b over a
    store.judge(a, c, "tie", rater="x")                                 # left out
    pairs = R.pairs_from_store(store)
    assert len(pairs) == 1 and pairs.chosen.shape == (1, 64)
    np.testing.assert_array_equal(pairs.chosen[0, :3], [1, 3, 4])
    # Flagged, b loses every comparison with an unflagged episode, the one it won included.
    store.judge(b, c, "first", rater="x", flags={b: ("hacking", "reads the answer")})
    pairs = R.pairs_from_store(store)
    assert pairs.chosen_length.tolist() == [2, 2] and pairs.rejected_length.tolist() == [3, 3]
    np.testing.assert_array_equal(pairs.chosen[:, :2], [[1, 2], [1, 5]])
