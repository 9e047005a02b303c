"""Rollout: batched sampling with a KV cache and multi-round episodes."""

from rlx.rollout.trajectory import FinishReason, Trajectory

__all__ = ["FinishReason", "Trajectory"]
