"""The main job: warm start + RL + evaluation, chosen by config.

    python -m experiments.train                                   # the default (toolcalc GRPO)
    python -m experiments.train --config=configs/toolcalc_cispo.py --workdir=/tmp/cispo
    python -m experiments.train --config=configs/toolcalc_grpo.py:quick --config.rl.steps=5

Each config has its own default workdir, `runs/<config name>[-<config arg>]` (the default job:
`runs/toolcalc_grpo`). Rerunning on the same workdir resumes from its latest checkpoint; a workdir
holding a run of another config is refused with the differing keys (`--allow_config_change` to
continue it anyway), and a finished run prints its summary instead of running again.
"""

from absl import flags, logging
from ml_collections import config_flags

from rlx.train import cli, train_and_evaluate
from rlx.train.workdir import default_workdir

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/toolcalc_grpo.py", "Experiment config file[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints, metrics and the summary go (resumes if it holds a "
    "checkpoint of the same config). Default: runs/<config name>[-<config arg>].")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir whose stored config differs from this one "
    "(the differing keys are printed and the old config.json is kept).")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    workdir = _WORKDIR.value or default_workdir(
        config_flags.get_config_filename(flags.FLAGS["config"]))
    train_and_evaluate(_CONFIG.value, workdir, allow_config_change=_ALLOW_CHANGE.value)


if __name__ == "__main__":
    cli.run(main, "configs/toolcalc_grpo.py")
