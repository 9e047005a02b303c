"""TFDS builders: oracle demos built, read back with tfds.data_source, the same episodes as
`rlx.rollout.play` gives; deterministic rebuilds; the GSM8K-format QA adapter on a locally built
dataset."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from rlx import envs, rewards
from rlx.data import (
    EnvSetConfig,
    QaLocalConfig,
    RlxQaLocal,
    build,
    load_demos,
    parse_answer,
    qa_prompts,
    read,
)
from rlx.envs import scaffold as S
from rlx.rollout import play
from rlx.rollout.trajectory import Trajectory
from rlx.tokenizer import load_default

CFG = EnvSetConfig(name="toolcalc_test", env="toolcalc",
                   overrides=(("num_steps", 2), ("fault_rate", 0.2)), axes="all_axes",
                   num_train=12, num_heldout=10, seed=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds"))
    build(CFG, d)
    return d


def demo_len(env):
    """The builder's episode width: the oracle's default rounds of the longest action and obs."""
    return env.max_prompt_len + (3 * env.max_steps + 2) * (env.max_action_len + env.max_obs_len)


def test_demos_are_the_oracle_episodes_of_play(built):
    env, params = envs.make("toolcalc", split="heldout", num_steps=2, fault_rate=0.2,
                            axes="all_axes")
    # The builder plays batches of 64 from fold_in(split key, start); 10 rows: one batch.
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(3), 1), 0)
    ref = jax.jit(lambda k: play(env, params, k, 64, max_len=demo_len(env)))(key)
    ds = tfds.data_source("rlx_oracle_demos", split="heldout", data_dir=built, download=False,
                          builder_kwargs={"config": CFG})
    assert len(ds) == 10
    rec = read(CFG, built, "heldout")
    np.testing.assert_array_equal(rec["index"], np.arange(10))
    for field in ("tokens", "policy_mask", "length", "prompt_length", "rounds"):
        np.testing.assert_array_equal(rec[field], np.asarray(getattr(ref, field))[:10], field)
    np.testing.assert_array_equal(rec["task"]["answer"], np.asarray(ref.task.answer)[:10])
    assert set(rec["scaffold"]) == {f.name for f in dataclasses.fields(S.Scaffold)}
    for field, value in rec["scaffold"].items():
        np.testing.assert_array_equal(value, np.asarray(getattr(ref.scaffold, field))[:10], field)


def test_rebuild_is_deterministic(built, tmp_path):
    build(CFG, str(tmp_path / "a"))
    a, b = read(CFG, built, "heldout"), read(CFG, str(tmp_path / "a"), "heldout")
    jax.tree.map(np.testing.assert_array_equal, a, b)
    other = EnvSetConfig(name="toolcalc_test", env="toolcalc", overrides=CFG.overrides,
                         axes="all_axes", num_train=12, num_heldout=10, seed=4)
    build(other, str(tmp_path / "b"))
    c = read(other, str(tmp_path / "b"), "heldout")
    assert not np.array_equal(a["tokens"], c["tokens"])


def test_demos(built):
    tok = load_default()
    d = load_demos(CFG, built, "train")
    n, t = d["tokens"].shape
    assert n == 12 and d["policy_mask"].shape == (n, t) and d["correct"].all()
    assert d["scaffold_heldout"].shape == (n, len(S.AXES)) and not d["scaffold_heldout"].any()
    for i in range(n):
        toks, mask, ln, pl = (d["tokens"][i], d["policy_mask"][i], d["length"][i],
                              d["prompt_length"][i])
        assert not mask[:pl].any() and not mask[ln:].any() and mask[pl]
        policy_text = tok.decode(toks[mask])
        # The assistant's tokens: one call per step (retries on faults) and the answer.
        assert policy_text.endswith(f"<answer>{d['answer'][i]}</answer>")
        assert policy_text.count("<answer>") == 1
        assert d["rounds"][i] >= d["n_steps"][i] + 1
        # Observations (mask False) after the prompt hold the tool results / errors.
        obs_text = tok.decode(toks[pl:ln][~mask[pl:ln]])
        assert obs_text.count("\n") >= 1
    held = load_demos(CFG, built, "heldout")
    assert held["scaffold_heldout"].all()


GSM8K_LIKE = [
    ("Tom has 3 apples and buys 4 more. How many apples?",
     "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"),
    ("A shop sells 1,200 pens a day. How many in 2 days?",
     "1,200 * 2 = <<1200*2=2400>>2,400\n#### 2,400"),
    ("It was 5 degrees and dropped 8. What now?", "5 - 8 = -3\n#### -3"),
    ("Half of 5?", "2.5\n#### 2.5"),
]


def test_qa_adapter(tmp_path):
    cfg = QaLocalConfig(name="tiny", examples=tuple(GSM8K_LIKE), test_examples=GSM8K_LIKE[:1])
    builder = RlxQaLocal(config=cfg, data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    src = tfds.data_source("rlx_qa_local", split="train", data_dir=str(tmp_path),
                           download=False, builder_kwargs={"config": cfg})
    rows = sorted((src[i] for i in range(len(src))), key=lambda r: r["question"])
    assert sorted(q.encode() for q, _ in GSM8K_LIKE) == [r["question"] for r in rows]
    tok = load_default()
    prompts, task = qa_prompts(rows, tok, max_prompt_len=96)
    want = {q: parse_answer(a) for q, a in GSM8K_LIKE}
    assert [want[r["question"].decode()] for r in rows] == list(
        zip(np.asarray(task.answer).tolist(), np.asarray(task.valid).tolist(), strict=True))
    assert parse_answer("#### 2,400") == (2400, True) and parse_answer("no marker") == (0, False)
    for i, r in enumerate(rows):
        text = tok.decode(np.asarray(prompts.tokens[i])[: int(prompts.length[i])])
        assert r["question"].decode() in text and text.endswith("<|im_start|>assistant\n")
    # answer_match on responses: right, wrong, and for the non-integer reference always 0.
    n = len(rows)
    resp = [tok.encode(f"<answer>{int(task.answer[i]) + (i % 2)}</answer>") for i in range(n)]
    width = int(prompts.tokens.shape[1]) + max(map(len, resp))
    toks = np.zeros((n, width), np.int32)
    mask = np.zeros((n, width), bool)
    lengths = []
    for i in range(n):
        p = int(prompts.length[i])
        toks[i, :p] = np.asarray(prompts.tokens[i])[:p]
        toks[i, p:p + len(resp[i])] = resp[i]
        mask[i, p:p + len(resp[i])] = True
        lengths.append(p + len(resp[i]))
    z = jnp.zeros((n,), jnp.int32)
    traj = Trajectory(tokens=jnp.asarray(toks), policy_mask=jnp.asarray(mask),
                      rollout_logprobs=jnp.zeros((n, width)), prompt_length=prompts.length,
                      length=jnp.asarray(lengths), finish_reason=z, rounds=z, tool_calls=z,
                      truncated=jnp.zeros((n,), bool), rewards={},
                      group=z, info={}, task=task)
    total, comps = rewards.compose({"answer_match": 1.0})(traj, task)
    want_r = [float((i % 2 == 0) and bool(task.valid[i])) for i in range(n)]
    assert np.asarray(total).tolist() == want_r
