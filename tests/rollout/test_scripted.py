"""`rlx.rollout.play`: episodes of a scripted policy as a `Trajectory`, checked against a walk
of the scripted env's rules (rlx/rollout/testing.py) written out in numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from rlx.envs.base import Chunk
from rlx.rollout import FinishReason, play
from rlx.rollout.testing import OBS_BASE, PROMPT_BASE, STOP_BASE, ScriptedEnv

ACTION = (STOP_BASE + 5, STOP_BASE + 9)


def two_tokens(key, state):
    return Chunk(jnp.asarray(ACTION, jnp.int32), jnp.asarray(2, jnp.int32))


def expected(task: int, max_rounds: int):
    """(prompt length, [(action start, obs length), ...], rounds, done) by the env's rules."""
    prompt = 2 + task % 4
    to_done = 1 + task % 4
    rounds = min(to_done, max_rounds)
    spans, pos = [], prompt
    for r in range(1, rounds + 1):
        obs = 1 + (task + r) % 3
        spans.append((pos, obs))
        pos += 2 + obs
    return prompt, spans, rounds, to_done <= max_rounds


def test_play_lays_out_a_trajectory_by_the_env_rules():
    env, batch, max_rounds = ScriptedEnv(), 32, 3
    traj = jax.device_get(jax.jit(lambda k: play(env, env.default_params, k, batch, two_tokens,
                                                 max_rounds=max_rounds))(jax.random.key(3)))
    width = traj.tokens.shape[1]
    assert width == env.max_prompt_len + max_rounds * (2 + env.max_obs_len)
    np.testing.assert_array_equal(traj.group, np.arange(batch))
    assert not np.asarray(traj.rollout_logprobs).any()
    tasks = np.asarray(traj.task["task"])
    assert len(set(tasks.tolist())) > 4
    for b, t in enumerate(tasks.tolist()):
        prompt, spans, rounds, done = expected(t, max_rounds)
        toks, mask = np.asarray(traj.tokens[b]), np.asarray(traj.policy_mask[b])
        np.testing.assert_array_equal(toks[:prompt], PROMPT_BASE + 7 * t + np.arange(prompt))
        want_mask = np.zeros(width, bool)
        for r, (start, obs) in enumerate(spans, 1):
            np.testing.assert_array_equal(toks[start:start + 2], ACTION)
            want_mask[start:start + 2] = True
            assert toks[start + 2] == OBS_BASE + r and (obs < 2 or toks[start + 3] == OBS_BASE + 20 + t)
        np.testing.assert_array_equal(mask, want_mask)
        length = spans[-1][0] + 2 + spans[-1][1]
        assert traj.length[b] == length and traj.prompt_length[b] == prompt
        assert traj.rounds[b] == rounds
        assert traj.finish_reason[b] == (FinishReason.ENV_DONE if done else FinishReason.MAX_ROUNDS)
        assert bool(traj.truncated[b]) == (not done)
        np.testing.assert_allclose(traj.rewards["env"][b], 0.2 * rounds + done, rtol=1e-6)
        assert traj.tool_calls[b] == rounds - done == traj.info["tool_calls"][b]
        assert traj.info["round"][b] == rounds


def test_play_marks_rows_cut_by_max_len():
    env = ScriptedEnv(rounds=3)
    traj = jax.jit(lambda k: play(env, env.default_params, k, 8, two_tokens, max_rounds=3,
                                  max_len=8))(jax.random.key(0))
    assert (np.asarray(traj.length) == 8).all()
    assert (np.asarray(traj.finish_reason) == FinishReason.LENGTH).all()
    assert np.asarray(traj.truncated).all()
