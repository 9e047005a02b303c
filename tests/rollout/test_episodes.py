"""`rlx.rollout.run_episodes`: the interleaved multi-round layout, masks, per-row offsets and
finish reasons are exactly those of an independent episode walker; rollout log-probs equal the
trainer's on the final sequences; the host-env driver reproduces the on-device one; groups share
tasks; the sharded run equals the single-device one; idle decode slots are counted exactly.

References: `ScriptedHostEnv` (plain Python twin of the scripted env) driven by a walker written
here, `Policy.logits` / `Policy.token_logprobs` (full causal forwards, no KV cache), and
hand-written expectations. Tolerances: log-probs within 1e-5 (float32 model and head).
"""

import jax
import numpy as np
import pytest

import rlx
from rlx import rollout
from rlx.envs import Chunk
from rlx.rollout import FinishReason
from rlx.rollout.testing import ScriptedEnv, ScriptedHostEnv

B, M, ROUNDS, MAX_LEN = 8, 6, 3, 18
KW = dict(batch_size=B, max_rounds=ROUNDS, max_new_tokens=M, max_len=MAX_LEN)
KEY = jax.random.key(3)


@pytest.fixture(scope="module")
def traj(tiny):
    policy, params = tiny
    return rollout.run_episodes(policy, params, ScriptedEnv(), None, KEY, **KW)


def walk(traj, key, *, batch_size, max_new_tokens, max_rounds, max_len, group_size=1):
    """Replays every row against the host twin of the env and checks the layout token by token:
    [prompt | policy span | obs | policy span | ...], each span ending at its first stop token,
    at max_new_tokens or at max_len. Returns the per-row round spans for further checks."""
    env = ScriptedHostEnv()
    stop = set(env.stop_token_ids)
    params = env.default_params
    reset_keys, _, _, env_key = rollout.episode_keys(key, batch_size, group_size)
    toks, mask = np.asarray(traj.tokens), np.asarray(traj.policy_mask)
    lps = np.asarray(traj.rollout_logprobs)
    spans = []
    for b in range(batch_size):
        chunk, state = env.reset(reset_keys[b], params)
        n = int(chunk.length)
        exp_toks, exp_mask = list(np.asarray(chunk.tokens)[:n]), [False] * n
        cur, r, reward, info, row_spans = n, 0, 0.0, None, []
        while True:
            r += 1
            span = 0
            while cur + span < max_len and mask[b, cur + span]:
                span += 1
            seg = list(toks[b, cur:cur + span])
            assert 1 <= span <= max_new_tokens, (b, r, span)
            assert not (set(seg[:-1]) & stop), "a round continued past a stop token"
            stopped = seg[-1] in stop
            assert stopped or span == max_new_tokens or cur + span == max_len
            exp_toks += seg
            exp_mask += [True] * span
            cur += span
            row_spans.append(span)
            if not stopped and cur == max_len:
                reason = FinishReason.LENGTH
                break
            step_key = jax.random.split(jax.random.fold_in(env_key, r), batch_size)[b]
            action = Chunk(np.pad(np.array(seg, np.int32), (0, max_new_tokens - span)),
                           np.int32(span))
            obs, state, rew, done, info = env.step(step_key, state, action, params)
            reward += float(rew)
            k = int(obs.length)
            if done:
                reason = FinishReason.ENV_DONE
                break
            if r >= max_rounds:
                reason = FinishReason.MAX_ROUNDS
                break
            if cur + k + 1 > max_len:
                reason = FinishReason.LENGTH
                break
            exp_toks += list(np.asarray(obs.tokens)[:k])
            exp_mask += [False] * k
            cur += k
        width = toks.shape[1]
        np.testing.assert_array_equal(toks[b], np.pad(exp_toks, (0, width - cur)), err_msg=f"{b}")
        np.testing.assert_array_equal(mask[b], np.pad(exp_mask, (0, width - cur)))
        assert (lps[b][~mask[b]] == 0).all()
        assert int(traj.length[b]) == cur and int(traj.prompt_length[b]) == n
        assert int(traj.finish_reason[b]) == reason, (b, int(traj.finish_reason[b]), reason)
        assert bool(traj.truncated[b]) == (reason != FinishReason.ENV_DONE)
        assert int(traj.rounds[b]) == r
        np.testing.assert_allclose(float(traj.rewards["env"][b]), reward, atol=1e-5)
        if info is not None:
            for name, value in info.items():
                assert int(traj.info[name][b]) == int(value), name
            assert int(traj.tool_calls[b]) == int(info["tool_calls"])
        assert int(traj.task["task"][b]) == state.task
        spans.append(row_spans)
    return spans


def test_layout_against_independent_walker(traj):
    spans = walk(traj, KEY, batch_size=B, max_new_tokens=M, max_rounds=ROUNDS, max_len=MAX_LEN)
    reasons = set(np.asarray(traj.finish_reason).tolist())
    # The configuration exercises every way an episode ends, at different rounds.
    assert reasons == {FinishReason.ENV_DONE, FinishReason.MAX_ROUNDS, FinishReason.LENGTH}
    assert len(set(np.asarray(traj.rounds).tolist())) >= 2
    # Idle decode slots, recounted from the spans: in round r the loop makes max(span) - 1
    # forward steps, in which a row with span s is busy s - 1 times (its first token comes from
    # the logits of the prefill / observation append).
    steps = idle = 0
    for r in range(ROUNDS):
        live = [s[r] for s in spans if len(s) > r]
        if not live:
            break
        n = max(live) - 1
        steps += n
        idle += B * n - sum(s - 1 for s in live)
    assert int(traj.stats["decode_steps"]) == steps
    assert int(traj.stats["idle_slots"]) == idle
    np.testing.assert_allclose(float(traj.stats["idle_fraction"]), idle / (B * steps))


def test_rollout_logprobs_equal_trainer_logprobs(tiny, traj):
    policy, params = tiny
    ref = np.asarray(jax.jit(policy.token_logprobs)(params, traj.tokens))
    mask = np.asarray(traj.policy_mask)
    np.testing.assert_allclose(np.asarray(traj.rollout_logprobs)[mask], ref[mask], atol=1e-5)


def test_host_env_driver_reproduces_device_driver(tiny, traj):
    policy, params = tiny
    host = rollout.run_episodes(policy, params, ScriptedHostEnv(), None, KEY, **KW)
    for name in ("tokens", "policy_mask", "length", "prompt_length", "finish_reason", "rounds",
                 "tool_calls", "truncated", "group"):
        np.testing.assert_array_equal(np.asarray(getattr(host, name)),
                                      np.asarray(getattr(traj, name)), err_msg=name)
    np.testing.assert_allclose(np.asarray(host.rollout_logprobs),
                               np.asarray(traj.rollout_logprobs), atol=1e-6)
    np.testing.assert_allclose(np.asarray(host.rewards["env"]), np.asarray(traj.rewards["env"]),
                               atol=1e-6)
    assert set(host.info) == set(traj.info)
    for name in traj.info:
        np.testing.assert_array_equal(np.asarray(host.info[name]), np.asarray(traj.info[name]))
    np.testing.assert_array_equal(np.asarray(host.task["task"]), np.asarray(traj.task["task"]))
    for name in ("decode_steps", "idle_slots"):
        assert int(host.stats[name]) == int(traj.stats[name])


def test_greedy_episodes_equal_a_cache_free_reference(tiny):
    """Temperature 0: every token must be the argmax of a full causal forward over the row so
    far, with observations spliced in by the walker's rules."""
    policy, params = tiny
    kw = dict(batch_size=4, max_rounds=3, max_new_tokens=5, max_len=26)
    key = jax.random.key(9)
    traj = rollout.run_episodes(policy, params, ScriptedEnv(), None, key, temperature=0.0, **kw)
    walk(traj, key, batch_size=4, max_new_tokens=5, max_rounds=3, max_len=26)
    toks, mask = np.asarray(traj.tokens), np.asarray(traj.policy_mask)
    logits = np.asarray(jax.jit(policy.logits)(params, traj.tokens))
    for b, t in zip(*np.nonzero(mask), strict=True):
        # Causal: logits at t-1 depend on tokens[:t] only, so one forward checks every step.
        assert toks[b, t] == np.argmax(logits[b, t - 1]), (b, t)
    lp = np.asarray(jax.jit(policy.token_logprobs)(params, traj.tokens))
    np.testing.assert_allclose(np.asarray(traj.rollout_logprobs)[mask], lp[mask], atol=1e-5)


def test_groups_share_tasks_and_sharded_run_equals_single_device(tiny):
    policy, params = tiny
    kw = dict(KW, group_size=2)  # same shapes as `traj`: no new compile for the single device
    key = jax.random.key(21)
    single = rollout.run_episodes(policy, params, ScriptedEnv(), None, key, **kw)
    np.testing.assert_array_equal(np.asarray(single.group), np.arange(8) // 2)
    task = np.asarray(single.task["task"])
    np.testing.assert_array_equal(task[0::2], task[1::2])
    p = np.asarray(single.prompt_length)
    np.testing.assert_array_equal(p[0::2], p[1::2])
    walk(single, key, batch_size=B, max_new_tokens=M, max_rounds=ROUNDS, max_len=MAX_LEN,
         group_size=2)

    mesh = rlx.sharding.make_mesh((4, 1, 2))
    sharded = rlx.models.Policy(policy.cfg, mesh=mesh, rules=rlx.sharding.DEFAULT_RULES)
    sparams, _ = rlx.sharding.init_sharded(sharded, jax.random.key(0), mesh)
    out = rollout.run_episodes(sharded, sparams, ScriptedEnv(), None, key, **kw)
    assert rlx.sharding.num_shards(out.tokens) == 4
    for name in ("tokens", "policy_mask", "length", "finish_reason", "rounds"):
        np.testing.assert_array_equal(np.asarray(getattr(out, name)),
                                      np.asarray(getattr(single, name)), err_msg=name)
    np.testing.assert_allclose(np.asarray(out.rollout_logprobs),
                               np.asarray(single.rollout_logprobs), atol=1e-5)


def test_bad_arguments_name_the_key(tiny):
    policy, params = tiny
    with pytest.raises(ValueError, match="group_size"):
        rollout.run_episodes(policy, params, ScriptedEnv(), None, KEY, batch_size=6,
                             group_size=4)
    with pytest.raises(ValueError, match="rollout.max_len"):
        rollout.run_episodes(policy, params, ScriptedEnv(), None, KEY, batch_size=2, max_len=4)
