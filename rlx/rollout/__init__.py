"""Rollout: batched sampling with a KV cache and multi-round episodes.

    traj = rlx.rollout.sample(policy, params, prompts, key, temperature=1.0, max_new_tokens=64)
    traj = rlx.rollout.run_episodes(policy, params, env, env_params, key, batch_size=16,
                                    **rlx.rollout.rollout_kwargs(config.rollout))
    traj = rlx.rollout.play(env, env_params, key, batch=16)   # the env's oracle, no model

All three return a `Trajectory`.
"""

from rlx.rollout.config import SamplingConfig, rollout_kwargs
from rlx.rollout.episodes import episode_keys, run_episodes
from rlx.rollout.sampler import sample
from rlx.rollout.sampling import filter_logits, select_tokens
from rlx.rollout.scripted import oracle_fn, play, random_action_fn
from rlx.rollout.trajectory import FinishReason, Trajectory, render_episode

__all__ = ["FinishReason", "SamplingConfig", "Trajectory", "episode_keys", "filter_logits",
           "oracle_fn", "play", "random_action_fn", "render_episode", "rollout_kwargs",
           "run_episodes", "sample", "select_tokens"]
