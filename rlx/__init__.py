"""rlx: reinforcement-learning post-training of language models in JAX.

    import rlx
    policy = rlx.models.Policy(rlx.models.preset("tiny"))
    env, env_params = rlx.envs.make("toolcalc")
    traj = rlx.rollout.run_episodes(policy, params, env, env_params, key, batch_size=16)
"""

from rlx import algos, data, diagnostics, envs, models, rewards, rollout, sharding, tokenizer, train

__all__ = ["algos", "data", "diagnostics", "envs", "models", "rewards", "rollout", "sharding",
           "tokenizer", "train"]
__version__ = "0.1.0"
