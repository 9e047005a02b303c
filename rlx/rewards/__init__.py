"""Jittable reward modules (`REWARDS` registry) and `compose(config)` for weighted sums with every
component reported. See `rlx.rewards.core`."""

from rlx.rewards.core import REWARDS, answer_ids, compose, defaults, register

__all__ = ["REWARDS", "answer_ids", "compose", "defaults", "register"]
