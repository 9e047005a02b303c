"""The episode store: records from a trajectory, informative pairs, judgements checked before
any write, concurrent writers from several processes, and a restart that loses nothing."""

import multiprocessing
import sqlite3

import numpy as np
import pytest

from rlx.feedback import store as S


def record(task: str, reward: float, tokens, run="r", step=0) -> S.EpisodeRecord:
    tokens = np.asarray(tokens, np.int32)
    return S.EpisodeRecord(run=run, step=step, task=task, prompt="p", rounds=[
        {"policy": "<tool_call>x</tool_call>", "env": "3"}], reward=reward,
        components={"correct": reward}, info={"tool_calls": 1.0}, tokens=tokens,
        policy_mask=tokens % 2 == 0, scaffold={"tool_names": "_lower"})


def filled(tmp_path) -> tuple[S.EpisodeStore, list[int]]:
    store = S.EpisodeStore(str(tmp_path / "feedback.sqlite"))
    ids = store.add_episodes([record("t0", 1.0, [1, 2, 3]), record("t0", 0.0, [1, 2, 4]),
                              record("t0", 0.0, [1, 2, 5]), record("t1", 1.0, [7, 8]),
                              record("t1", 1.0, [7, 8])])        # t1: identical episodes
    return store, ids


def test_round_trip_keeps_every_field(tmp_path):
    store, ids = filled(tmp_path)
    (nan_id,) = store.add_episodes([record("t2", float("nan"), [1])])
    assert np.isnan(store.episode(nan_id).reward)     # stored as NULL, read back as NaN
    got = store.episode(ids[0])
    want = record("t0", 1.0, [1, 2, 3])
    assert got.id == ids[0] and got.to_json() == {**want.to_json(), "id": ids[0]}
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.policy_mask, want.policy_mask)
    with pytest.raises(S.FeedbackError, match="episode 99 is not in the store"):
        store.episode(99)


def test_pairs_are_one_task_informative_and_never_repeated(tmp_path):
    store, ids = filled(tmp_path)
    seen = []
    while (pair := store.next_pair("ana", seed=len(seen))) is not None:
        a, b = pair
        assert a.task == b.task == "t0"             # t1's episodes are identical: no pair
        # The pairs whose rewards differ come first.
        assert (a.reward != b.reward) == (len(seen) < 2), (len(seen), a.reward, b.reward)
        store.judge(a.id, b.id, "first", rater="ana")
        seen.append((a.id, b.id))
    assert sorted(tuple(sorted(p)) for p in seen) == [(ids[0], ids[1]), (ids[0], ids[2]),
                                                      (ids[1], ids[2])]
    # Either episode may come first: the older one would otherwise always be on one side.
    sides = {store.next_pair("cy", seed=k)[0].id < store.next_pair("cy", seed=k)[1].id
             for k in range(20)}
    assert sides == {True, False}
    assert store.next_pair("bo") is not None        # another rater still has every pair


def test_judgements_are_checked_before_anything_is_written(tmp_path):
    store, ids = filled(tmp_path)
    bad = [
        (dict(first=ids[0], second=ids[1], choice="better"), "choice='better'"),
        (dict(first=ids[0], second=ids[0], choice="tie"), "the same episode"),
        (dict(first=ids[0], second=ids[3], choice="tie"), "different tasks"),
        (dict(first=ids[0], second=999, choice="tie"), "episode 999 is not in the store"),
        (dict(first="1", second=ids[1], choice="tie"), "first='1' must be an episode id"),
        (dict(first=ids[0], second=ids[1], choice="tie", rater="a b"), "rater='a b'"),
        (dict(first=ids[0], second=ids[1], choice="tie", flags={ids[2]: ("hacking", "x")}),
         "only the judged episodes"),
        (dict(first=ids[0], second=ids[1], choice="tie", flags={ids[0]: ("rude", "x")}),
         "flag kind='rude'"),
        (dict(first=ids[0], second=ids[1], choice="tie", flags={ids[0]: ("unsafe", " ")}),
         "reason must be"),
    ]
    for kwargs, message in bad:
        kwargs.setdefault("rater", "ana")
        with pytest.raises(S.FeedbackError, match=message):
            store.judge(**kwargs)
    assert store.count() == {"episodes": 5, "judgements": 0, "flags": 0}
    # Given in either order, a pair is stored in id order with the choice mapped.
    store.judge(ids[1], ids[0], "first", rater="ana", flags={ids[0]: ("hacking", " reads the answer ")})
    (j,) = store.judgements()
    assert (j.first, j.second, j.choice, j.rater) == (ids[0], ids[1], "second", "ana")
    assert j.flags == ((ids[0], "hacking", "reads the answer"),)
    assert store.flagged() == {ids[0]: [("hacking", "reads the answer")]}
    chosen, rejected = store.preferences()
    assert chosen.tolist() == [ids[1]] and rejected.tolist() == [ids[0]]
    with pytest.raises(S.FeedbackError, match="already judged"):
        store.judge(ids[0], ids[1], "tie", rater="ana")
    assert store.count() == {"episodes": 5, "judgements": 1, "flags": 1}


def _rate_all(path: str, rater: str) -> int:
    store, n = S.EpisodeStore(path), 0
    while (pair := store.next_pair(rater)) is not None:
        store.judge(pair[0].id, pair[1].id, "tie" if n % 3 else "first", rater=rater,
                    flags={pair[1].id: ("unsafe", f"{rater} {n}")} if n % 2 else None)
        n += 1
    return n


def test_concurrent_writers_lose_nothing_and_a_restart_keeps_everything(tmp_path):
    path = str(tmp_path / "feedback.sqlite")
    store = S.EpisodeStore(path)
    rng = np.random.default_rng(0)
    store.add_episodes([record(f"t{t}", float(rng.integers(2)), [t, i, *rng.integers(9, size=3)])
                        for t in range(6) for i in range(4)])       # 6 tasks x 6 pairs
    raters = [f"rater{i}" for i in range(4)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        done = pool.starmap(_rate_all, [(path, r) for r in raters])
    assert done == [36] * 4
    reopened = S.EpisodeStore(path)           # a restart: a new store over the same file
    judgements = reopened.judgements()
    assert len(judgements) == 144 and reopened.count()["flags"] == 4 * 18
    for r in raters:
        mine = {(j.first, j.second) for j in reopened.judgements(rater=r)}
        assert len(mine) == 36
    # The file is a plain SQLite database in WAL mode.
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_records_from_a_trajectory_split_rounds_where_the_policy_mask_changes():
    from types import SimpleNamespace

    from rlx.tokenizer import load_default
    tok = load_default()
    prompt, call, obs, answer = (tok.encode(t) for t in (
        "Q: 2+3?", "<tool_call>add</tool_call>", "<|im_start|>tool\n5", "<answer>5</answer>"))
    row = prompt + call + obs + answer
    mask = [0] * len(prompt) + [1] * len(call) + [0] * len(obs) + [1] * len(answer)
    width = len(row) + 3
    tokens = np.zeros((2, width), np.int32)
    policy = np.zeros((2, width), bool)
    tokens[0, : len(row)], policy[0, : len(row)] = row, mask
    tokens[1, : len(prompt)] = prompt                  # row 1: nothing after its prompt
    traj = SimpleNamespace(tokens=tokens, policy_mask=policy,
                           prompt_length=np.array([len(prompt)] * 2),
                           length=np.array([len(row), len(prompt)]), group=np.array([3, 3]),
                           info={"correct": np.array([1, 0]), "per_step": np.zeros((2, 4))})
    recs = S.records_from_trajectory(traj, tok, run="main", step=5, total=np.array([1.0, 0.0]),
                                     components={"correct": np.array([1.0, 0.0])},
                                     scaffold={"chat_template": np.array(["chatml", "xml"])})
    assert recs[0].prompt == "Q: 2+3?" and recs[0].task == recs[1].task == "main/5/3"
    assert recs[0].rounds == [{"policy": "<tool_call>add</tool_call>",
                               "env": "<|im_start|>tool\n5"},
                              {"policy": "<answer>5</answer>", "env": ""}]
    assert recs[0].info == {"correct": 1.0} and recs[0].components == {"correct": 1.0}
    np.testing.assert_array_equal(recs[0].tokens, row)
    assert recs[1].rounds == [] and recs[1].reward == 0.0
    assert [r.scaffold for r in recs] == [{"chat_template": "chatml"}, {"chat_template": "xml"}]
