"""The expert-feedback experiment: collect warm-start episodes, let a simulated expert judge
pairs, fit a reward model, run RL on it (and on the rule reward), plot the expert's criterion.

    python -m experiments.expert_feedback --workdir=runs/expert_feedback
    python -m experiments.expert_feedback --config=configs/expert_feedback.py:quick --workdir=/tmp/ef
    python -m experiments.expert_feedback --workdir=runs/ef --stop_after=collect   # then rate

Every stage is resumable and a rerun skips what is done; see rlx/feedback/experiment.py. The
store it fills (`<workdir>/feedback.sqlite`) is the one `python -m experiments.rate` serves to
human raters.
"""

from absl import flags, logging
from ml_collections import config_flags

from rlx.feedback import experiment
from rlx.train import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/expert_feedback.py", "Experiment config file[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/expert_feedback", "Where the store, the reward "
                               "model, the RL runs, the table and the plot go.")
_STOP_AFTER = flags.DEFINE_enum("stop_after", "rl", experiment.STAGES, "The last stage to run: "
                                "'collect' leaves episodes for people to rate "
                                "(python -m experiments.rate).")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    experiment.run(_CONFIG.value, _WORKDIR.value, _STOP_AFTER.value)


if __name__ == "__main__":
    cli.run(main, "configs/expert_feedback.py")
