"""Environments: the Env contract, the registry, tasks and the scaffold perturbation pipeline."""

from rlx.envs.base import Chunk, Env, HostEnv

__all__ = ["Chunk", "Env", "HostEnv"]
