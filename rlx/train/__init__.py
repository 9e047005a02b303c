"""Training: optimizer, update and SFT steps, checkpoints, metrics and the RL loop."""

from rlx.train.loop import evaluate, evaluate_all, train_and_evaluate
from rlx.train.update import RLBatch, TrainState, UpdateConfig, make_sft_step, make_update_step

__all__ = ["RLBatch", "TrainState", "UpdateConfig", "evaluate", "evaluate_all",
           "make_sft_step", "make_update_step", "train_and_evaluate"]
