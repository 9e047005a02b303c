"""Training: the RL step (`step.py`), the driver with its checkpoints and logs (`loop.py`),
evaluation, the optimizer, update and SFT steps, and the supervised data mixtures."""

from rlx.train.evaluation import evaluate, evaluate_all
from rlx.train.loop import train_and_evaluate
from rlx.train.step import Run
from rlx.train.update import RLBatch, RLConfig, TrainState, make_sft_step, make_update_step

__all__ = ["RLBatch", "RLConfig", "Run", "TrainState", "evaluate", "evaluate_all",
           "make_sft_step", "make_update_step", "train_and_evaluate"]
