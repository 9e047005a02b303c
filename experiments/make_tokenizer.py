"""Train the default tokenizer of the built-in tasks and write `rlx/assets/tokenizer.model`.

    python -m experiments.make_tokenizer [--out rlx/assets/tokenizer.model] [--vocab_size 1024]

Deterministic: the corpus (`rlx.envs.corpus.scaffold_corpus`) is every atom and literal of the
scaffold grammars plus seeded random tool names, pre-split so pieces are letter runs, and
SentencePiece trains single-threaded without sampling, so rerunning gives the same model bytes.
"""

from __future__ import annotations

import hashlib
import os

from absl import app, flags, logging

from rlx.envs.corpus import DELIMITER, scaffold_corpus
from rlx.tokenizer import SentencePieceTokenizer

VOCAB_SIZE = 1024
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rlx",
                           "assets", "tokenizer.model")

_OUT = flags.DEFINE_string("out", DEFAULT_OUT, "where to write the SentencePiece model")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", VOCAB_SIZE, "vocabulary size", lower_bound=1)
_NAMES = flags.DEFINE_integer("names", 20000, "seeded random tool names in the corpus",
                              lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "seed of the random tool names")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    tok = SentencePieceTokenizer.train(scaffold_corpus(_NAMES.value, _SEED.value),
                                       vocab_size=_VOCAB_SIZE.value,
                                       pretokenization_delimiter=DELIMITER)
    tok.save(_OUT.value)
    digest = hashlib.sha256(tok.model_proto).hexdigest()[:16]
    print(f"wrote {_OUT.value}: vocab_size={tok.vocab_size} sha256={digest}")


if __name__ == "__main__":
    app.run(main)
