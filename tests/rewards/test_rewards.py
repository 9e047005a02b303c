"""Reward modules against hand-computed (numpy / formula) references; jit + vmap of every
registered reward; composition; forbidden-tool penalty on real hackable episodes."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rlx import envs, rewards
from rlx.envs import scaffold as S
from rlx.feedback import reward_model
from rlx.models import ModelConfig
from rlx.rollout.scripted import play
from rlx.rollout.trajectory import Trajectory
from rlx.tokenizer import load_default

TOK = load_default()


def make_traj(tokens, policy_mask, prompt_length, info, task=None):
    tokens = np.asarray(tokens, np.int32)
    b, t = tokens.shape
    length = np.asarray([len(r) for r in policy_mask], np.int32) if isinstance(
        policy_mask, list) else None
    mask = np.zeros((b, t), bool)
    for i, r in enumerate(policy_mask):
        mask[i, : len(r)] = r
    if length is None:
        length = np.full((b,), t, np.int32)
    z = jnp.zeros((b,), jnp.int32)
    return Trajectory(
        tokens=jnp.asarray(tokens), policy_mask=jnp.asarray(mask),
        rollout_logprobs=jnp.zeros((b, t)), prompt_length=jnp.asarray(prompt_length, jnp.int32),
        length=jnp.asarray(length), finish_reason=z, rounds=z,
        tool_calls=jnp.asarray(info.get("tool_calls", np.zeros(b)), jnp.int32),
        truncated=jnp.zeros((b,), bool), rewards={},
        group=jnp.arange(b), info={k: jnp.asarray(v) for k, v in info.items()}, task=task)


def row(prompt: str, policy: str, pad_to: int):
    """Tokens of prompt+policy text, the policy mask, padded."""
    p, a = TOK.encode(prompt), TOK.encode(policy)
    ids = p + a
    return ids + [0] * (pad_to - len(ids)), [False] * len(p) + [True] * len(a), len(p)


INFO = dict(
    correct=np.array([True, False, True, False]),
    answered=np.array([True, True, True, False]),
    answer_valid=np.array([True, True, False, False]),
    invalid_calls=np.array([0, 2, 0, 0], np.int32),
    tool_calls=np.array([3, 2, 0, 0], np.int32),
    turns=np.array([4, 5, 1, 2], np.int32),
    used_forbidden_tool=np.array([False, True, False, False]),
)


class AnswerTask:   # any pytree with .answer works; a plain class keeps it minimal
    pass


@pytest.fixture(scope="module")
def traj():
    texts = [("Q: 2+2?", "<tool_call>x</tool_call> <answer>4</answer>"),
             ("Q: 7*6?", "<answer>41</answer> then <answer>42</answer>"),
             ("Q: 1-3?", "<answer>-2</answer>" + " pad" * 30),
             ("Q: <answer>5</answer>", "no answer here")]
    rows = [row(p, a, 160) for p, a in texts]
    task = envs.Task(answer=jnp.asarray([4, 42, -2, 5], jnp.int32),
                     n_steps=jnp.zeros(4, jnp.int32), plan_tool=jnp.zeros((4, 1), jnp.int32),
                     plan_args=jnp.zeros((4, 1, 2), jnp.int32),
                     table_keys=jnp.zeros((4, 1), jnp.int32),
                     table_values=jnp.zeros((4, 1), jnp.int32))
    return make_traj([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], INFO,
                     task)


def expected(name, traj, params):
    """Independent numpy references of each reward."""
    info = {k: np.asarray(v) for k, v in INFO.items()}
    mask = np.asarray(traj.policy_mask)
    n_policy = mask.sum(-1)
    if name == "correct":
        return info["correct"].astype(float)
    if name == "format":
        return (info["answered"] & info["answer_valid"] & (info["invalid_calls"] == 0)) * 1.0
    if name == "valid_call_rate":
        att = info["tool_calls"] + info["invalid_calls"]
        return np.array([c / a if a else 0.0 for c, a in zip(info["tool_calls"], att, strict=True)])
    if name == "forbidden_tool":
        return -info["used_forbidden_tool"].astype(float)
    if name == "step_cost":
        return -info[params["per"]].astype(float)
    if name == "length":
        return -n_policy / params["max_len"]
    if name == "overlong":
        resp = np.asarray(traj.length - traj.prompt_length) if params["count"] == "response" \
            else n_policy
        hi, c = params["max_len"], params["cache_len"]
        return np.array([0.0 if n <= hi - c else (hi - c - n) / c if n <= hi else -1.0
                         for n in resp])
    if name == "answer_match":
        # Last <answer> span the policy wrote, parsed from decoded text.
        out = []
        for i in range(traj.batch_size):
            toks = np.asarray(traj.tokens[i])[mask[i]]
            text = TOK.decode(toks)
            spans = text.split("<answer>")[1:]
            val = spans[-1].split("</answer>")[0] if spans and "</answer>" in spans[-1] else None
            out.append(float(val is not None and val.lstrip("-").isdigit()
                             and int(val) == int(traj.task.answer[i])))
        return np.array(out)
    if name == "expert_gold":    # the simulated expert's criterion, written out
        return (info["correct"] - 2.0 * info["used_forbidden_tool"] - 0.3 * info["invalid_calls"]
                - 0.1 * info["tool_calls"])
    if name == "preference":     # the critic's value after the whole row (one token appended)
        rm, rm_params = reward_model.load(params["path"])
        tokens = np.pad(np.asarray(traj.tokens), ((0, 0), (0, 1)))
        values = np.asarray(rm.critic.values(rm_params, tokens))
        return values[np.arange(len(tokens)), np.asarray(traj.length)]
    raise AssertionError(f"no reference for reward {name}; add one")


@pytest.mark.parametrize("name", rewards.REWARDS.names())
def test_reward_matches_reference_jit_vmap(name, traj, tmp_path):
    params = rewards.defaults(name)
    if name == "overlong":
        params.update(max_len=24, cache_len=8)
    if name == "preference":     # a small reward model with a random head, saved
        cfg = ModelConfig(vocab_size=TOK.vocab_size, d_model=32, n_layers=1, n_heads=2,
                          n_kv_heads=1, head_dim=16, d_ff=64, max_len=256)
        rm = reward_model.RewardModel.from_policy(cfg)
        reward_model.save(str(tmp_path), rm, rm.critic.init(jax.random.key(0)))
        params["path"] = str(tmp_path)
    if "tokenizer" in params:
        params["tokenizer"] = TOK
    fn = rewards.REWARDS.get(name)
    want = expected(name, traj, params)
    got = jax.jit(lambda t, k: fn(t, k, params))(traj, traj.task)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
    # vmapped over a leading axis of several batches.
    stacked = jax.tree.map(lambda x: jnp.stack([x, x, x]), traj)
    got3 = jax.jit(jax.vmap(lambda t: fn(t, t.task, params)))(stacked)
    rtol = 1e-5 if name == "preference" else 1e-6    # a model's matmuls, batched differently
    np.testing.assert_allclose(np.asarray(got3), np.stack([want] * 3), rtol=rtol, atol=1e-6)


def test_known_values(traj):
    # Spot values worked out by hand, so the references above are not the only check.
    am = rewards.REWARDS.get("answer_match")(traj, traj.task, {"tokenizer": TOK})
    assert np.asarray(am).tolist() == [1.0, 1.0, 1.0, 0.0]   # row 3: only the prompt answers
    ol = rewards.REWARDS.get("overlong")
    lens = jnp.asarray([10, 16, 20, 24, 30])
    t = traj.replace(length=lens + 5, prompt_length=jnp.full((5,), 5))
    got = ol(t, None, dict(max_len=24, cache_len=8, count="response"))
    np.testing.assert_allclose(np.asarray(got), [0.0, 0.0, -0.5, -1.0, -1.0])
    vcr = rewards.REWARDS.get("valid_call_rate")(traj, None, {})
    np.testing.assert_allclose(np.asarray(vcr), [1.0, 0.5, 0.0, 0.0])


def test_compose(traj):
    cfg = ml_collections.ConfigDict(dict(
        correct=1.0, format=0.1, forbidden_tool=2.0,
        overlong=dict(weight=0.5, max_len=24, cache_len=8)))
    total, comps = jax.jit(rewards.compose(cfg))(traj, traj.task)
    assert set(comps) == {"correct", "format", "forbidden_tool", "overlong"}
    ref = (expected("correct", traj, {}) + 0.1 * expected("format", traj, {})
           + 2.0 * expected("forbidden_tool", traj, {})
           + 0.5 * expected("overlong", traj, dict(max_len=24, cache_len=8, count="response")))
    np.testing.assert_allclose(np.asarray(total), ref, rtol=1e-6)
    with pytest.raises(KeyError, match="unknown reward 'corect'; known: .*correct"):
        rewards.compose({"corect": 1.0})
    with pytest.raises(KeyError, match="unknown params \\['max_length'\\]"):
        rewards.compose({"overlong": {"weight": 1.0, "max_length": 3}})
    with pytest.raises(KeyError, match="needs a 'weight'"):
        rewards.compose({"overlong": {"max_len": 3}})
    with pytest.raises(ValueError, match="already registered"):
        rewards.register("correct")(lambda t, k, p: 0)


def test_forbidden_tool_penalized_on_real_episodes():
    env, params = envs.make("toolcalc", num_steps=2, hackable=True)

    def cheat(key, state):
        call = env.render_call(state.scaffold, jnp.int32(S.REVEAL), jnp.int32(0), jnp.int32(0))
        ans = env.render_answer(state.scaffold, state.task.answer)
        use = (state.turn == 0) & (jax.random.uniform(key) < 2.0)   # always cheat first
        return jax.tree.map(lambda c, a: jnp.where(use, c, a), call, ans)

    ep = jax.jit(lambda k: play(env, params, k, 8, cheat, max_rounds=3))(jax.random.PRNGKey(0))
    traj = Trajectory(
        tokens=ep.tokens, policy_mask=ep.policy_mask, rollout_logprobs=jnp.zeros(ep.tokens.shape),
        prompt_length=ep.prompt_length, length=ep.length, finish_reason=jnp.zeros(8, jnp.int32),
        rounds=ep.rounds, tool_calls=ep.info["tool_calls"], truncated=jnp.zeros(8, bool),
        rewards={}, group=jnp.arange(8), info=ep.info, task=ep.task)
    total, comps = rewards.compose({"correct": 1.0, "forbidden_tool": 2.0,
                                    "answer_match": 1.0})(traj, traj.task)
    assert np.asarray(comps["forbidden_tool"]).tolist() == [-1.0] * 8
    assert np.asarray(comps["answer_match"]).tolist() == [1.0] * 8
    np.testing.assert_allclose(np.asarray(total), [0.0] * 8)   # 1 + 1 - 2
