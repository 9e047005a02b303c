"""The main job: warm start + RL + evaluation, chosen by config.

    python -m experiments.train                                   # the default (toolcalc GRPO)
    python -m experiments.train --config=configs/toolcalc_cispo.py --workdir=/tmp/cispo
    python -m experiments.train --config=configs/toolcalc_grpo.py:quick --config.rl.steps=5

Rerunning on the same --workdir resumes from its latest checkpoint.
"""

from absl import flags, logging
from ml_collections import config_flags

from rlx.train import cli, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/toolcalc_grpo.py", "Experiment config file[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/toolcalc_grpo", "Where checkpoints, metrics and "
                               "the summary go (resumes if it holds a checkpoint).")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main, "configs/toolcalc_grpo.py")
