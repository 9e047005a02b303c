"""rlx: reinforcement-learning post-training of language models in JAX.

    import rlx
    policy = rlx.models.Policy(rlx.models.preset("tiny"))
    env, env_params = rlx.envs.make("toolcalc")
    traj = rlx.rollout.run_episodes(policy, params, env, env_params, key, batch_size=16)
"""

from rlx import algos, diagnostics, envs, models, rewards, rollout, sharding, tokenizer

__all__ = ["algos", "diagnostics", "envs", "models", "rewards", "rollout", "sharding", "tokenizer"]
__version__ = "0.1.0"
