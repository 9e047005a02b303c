"""Serve the rating page for the episodes in a workdir's feedback store.

    python -m experiments.rate --workdir=runs/expert              # then open http://127.0.0.1:8765
    python -m experiments.rate --workdir=runs/expert --port=9000

Raters type an id, then judge pairs of episodes of one task (rlx/feedback/server.py); every
judgement goes to `<workdir>/feedback.sqlite` at once, so stopping the server loses nothing. The
server listens on 127.0.0.1 only, unless `--host` says otherwise: it has no login.
"""

import os

from absl import app, flags

from rlx.feedback.server import make_app
from rlx.feedback.store import EpisodeStore
from rlx.train import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The workdir whose feedback.sqlite holds the "
                               "episodes to rate (required).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every "
                            "interface; the page has no login).")
_PORT = flags.DEFINE_integer("port", 8765, "Port to listen on.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    path = os.path.join(_WORKDIR.value, "feedback.sqlite")
    if not os.path.isfile(path):
        raise SystemExit(
            f"{path} does not exist: there are no episodes to rate yet. Collect them first with\n"
            f"  python -m experiments.expert_feedback --workdir={_WORKDIR.value} --stop_after=collect")
    print(f"rating {path} at http://{_HOST.value}:{_PORT.value}/ (Ctrl-C stops)")
    make_app(EpisodeStore(path)).run(_HOST.value, _PORT.value, threaded=True)


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    cli.run(main, None)
