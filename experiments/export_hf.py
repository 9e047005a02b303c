"""Export a checkpoint of a training workdir as a Hugging Face model directory.

    python -m experiments.export_hf --workdir=runs/default --out=/tmp/toolcalc_tiny_hf
    python -m experiments.export_hf --workdir=runs/warmstart --out=rlx/assets/toolcalc_warmstart

The directory (config.json + model.safetensors, plus the run's tokenizer files) loads with
transformers' `AutoModelForCausalLM.from_pretrained`, with `rlx.models.hf.load`, and as a starting
point of another run (`--config.init.hf_path=<dir>`).
"""

import argparse
import os
import shutil

from rlx.models import hf
from rlx.tokenizer import SentencePieceTokenizer
from rlx.train import setup as setup_lib
from rlx.train.evaluation import restore_params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    args = ap.parse_args(argv)
    setup, step, params = restore_params(args.workdir, args.step)
    tok = setup.tokenizer
    family = hf.save(args.out, setup.policy.cfg, params,
                     config_overrides={"eos_token_id": tok.eos_id, "bos_token_id": tok.bos_id,
                                       "pad_token_id": tok.pad_id})
    source = setup_lib.hf_path(setup.config)
    if source:
        for name in os.listdir(source):
            if name.startswith("tokenizer") or name in ("special_tokens_map.json",
                                                         "chat_template.jinja"):
                shutil.copy(os.path.join(source, name), args.out)
    elif isinstance(tok, SentencePieceTokenizer):
        tok.save(os.path.join(args.out, "tokenizer.model"))
    print(f"wrote {family} checkpoint of {args.workdir} step {step} to {args.out}")


if __name__ == "__main__":
    main()
