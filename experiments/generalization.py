"""The scaffold-generalization experiment: arms x seeds of RL, then held-out evaluation.

    python -m experiments.generalization --workdir=runs/generalization
    python -m experiments.generalization --config=configs/generalization.py:quick --workdir=/tmp/g

Each arm is resumable and a rerun skips finished arms; see rlx/train/generalization.py.
"""

from absl import flags, logging
from ml_collections import config_flags

from rlx.train import cli, generalization

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/generalization.py", "Experiment config file[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/generalization", "Where the arms' runs, the "
                               "table and the plot go.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    generalization.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main, "configs/generalization.py")
