"""The main job: warm start + RL + evaluation, chosen by config.

    python -m experiments.train                                   # the default (toolcalc GRPO)
    python -m experiments.train --config=configs/toolcalc_cispo.py --workdir=/tmp/cispo
    python -m experiments.train --config=configs/toolcalc_grpo.py:quick --config.rl.steps=5

Each config has its own default workdir, `runs/<config name>[-<config arg>]` (the default job:
`runs/toolcalc_grpo`). Rerunning on the same workdir resumes from its latest checkpoint; a workdir
holding a run of another config is refused with the differing keys (`--allow_config_change` to
continue it anyway), and a finished run prints its summary instead of running again.

Several processes (hosts) run the same command with `--coordinator=<host:port>
--num_processes=N --process_id=i`, or `--coordinator=auto` on a TPU pod slice or under SLURM
(docs/scale.md); process 0 writes the workdir's files.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from rlx import sharding
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
_COORDINATOR = flags.DEFINE_string(
    "coordinator", None, "For a run of several processes (jax.distributed): host:port of "
    "process 0, with --num_processes and --process_id; or 'auto' on a TPU pod slice or under "
    "SLURM, where JAX finds all three (docs/scale.md).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index, 0..num_processes-1.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    if _COORDINATOR.value:
        sharding.init_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    elif _NUM_PROCESSES.value != 1:
        raise app.UsageError(f"--num_processes={_NUM_PROCESSES.value} needs --coordinator")
    workdir = _WORKDIR.value or default_workdir(
        config_flags.get_config_filename(flags.FLAGS["config"]))
    train_and_evaluate(_CONFIG.value, workdir, allow_config_change=_ALLOW_CHANGE.value)


if __name__ == "__main__":
    cli.run(main, "configs/toolcalc_grpo.py")
