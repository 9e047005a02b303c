"""Environments: the Env contract, the registry, the tool-use tasks and the scaffold
perturbation pipeline.

    env, params = rlx.envs.make("toolcalc", num_steps=2, axes="all_axes", split="train")
    obs, state = env.reset(key, params)
    obs, state, reward, done, info = env.step(key, state, action, params)
    action = env.oracle_action(state)          # the oracle's next round (jittable)

See `rlx.envs.tool_env` for the episode semantics and `rlx.envs.scaffold` for the axes; whole
episodes are played by `rlx.rollout` (`run_episodes` with a model, `play` with the oracle).
"""

from rlx.envs import scaffold
from rlx.envs.base import Chunk, Env, HostEnv
from rlx.envs.kvlookup import KVLookup
from rlx.envs.qa_env import QAEnv
from rlx.envs.registry import ENVS, make
from rlx.envs.tool_env import INFO_KEYS, Task, ToolEnv, ToolEnvParams, ToolEnvState
from rlx.envs.toolcalc import ToolCalc

__all__ = ["ENVS", "INFO_KEYS", "Chunk", "Env", "HostEnv", "KVLookup", "QAEnv", "Task", "ToolCalc",
           "ToolEnv", "ToolEnvParams", "ToolEnvState", "make", "scaffold"]
