"""Export a checkpoint of a training workdir as a Hugging Face model directory.

    python -m experiments.export_hf --workdir=runs/default --out=/tmp/toolcalc_tiny_hf
    python -m experiments.export_hf --workdir=runs/warmstart --out=rlx/assets/toolcalc_warmstart \
        --recipe="python -m experiments.train --config=configs/toolcalc_sft.py"

The directory (config.json + model.safetensors, plus the run's tokenizer files) loads with
transformers' `AutoModelForCausalLM.from_pretrained`, with `rlx.models.hf.load`, and as a starting
point of another run (`--config.init.hf_path=<dir>`). With `--recipe`, it also gets
`metrics.json`: the recipe, the run's steps, wall time, loss curve and evaluations.
"""

import json
import os
import shutil

from absl import app, flags, logging

from rlx.models import hf
from rlx.tokenizer import SentencePieceTokenizer
from rlx.train import cli, metrics
from rlx.train import setup as setup_lib
from rlx.train.evaluation import restore_params

_WORKDIR = flags.DEFINE_string("workdir", None, "the training workdir to export a checkpoint of "
                               "(required)")
_OUT = flags.DEFINE_string("out", None, "the Hugging Face model directory to write (required)")
_STEP = flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
_RECIPE = flags.DEFINE_string("recipe", None, "the command that trained the checkpoint: writes "
                              "metrics.json (recipe, steps, wall time, loss and evaluations)")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    out = _OUT.value
    setup, step, params = restore_params(_WORKDIR.value, _STEP.value)
    tok = setup.tokenizer
    family = hf.save(out, setup.policy.cfg, params,
                     config_overrides={"eos_token_id": tok.eos_id, "bos_token_id": tok.bos_id,
                                       "pad_token_id": tok.pad_id})
    source = setup_lib.hf_path(setup.config)
    if source:
        for name in os.listdir(source):
            if name.startswith("tokenizer") or name in ("special_tokens_map.json",
                                                         "chat_template.jinja"):
                shutil.copy(os.path.join(source, name), out)
    elif isinstance(tok, SentencePieceTokenizer):
        tok.save(os.path.join(out, "tokenizer.model"))
    if _RECIPE.value:
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(metrics.training_card(_WORKDIR.value, _RECIPE.value), f, indent=1)
    print(f"wrote {family} checkpoint of {_WORKDIR.value} step {step} to {out}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir", "out"])
    cli.run(main, None)
