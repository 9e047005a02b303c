"""Train the default tokenizer of the built-in tasks and write `rlx/assets/tokenizer.model`.

    python -m experiments.make_tokenizer [--out rlx/assets/tokenizer.model] [--vocab_size 1024]

Deterministic: the corpus (`rlx.envs.corpus.scaffold_corpus`) is every atom and literal of the
scaffold grammars plus seeded random tool names, pre-split so pieces are letter runs, and
SentencePiece trains single-threaded without sampling, so rerunning gives the same model bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rlx.envs.corpus import DELIMITER, scaffold_corpus  # noqa: E402
from rlx.tokenizer import SentencePieceTokenizer  # noqa: E402

VOCAB_SIZE = 1024
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rlx",
                           "assets", "tokenizer.model")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--vocab_size", type=int, default=VOCAB_SIZE)
    ap.add_argument("--names", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tok = SentencePieceTokenizer.train(scaffold_corpus(args.names, args.seed),
                                       vocab_size=args.vocab_size,
                                       pretokenization_delimiter=DELIMITER)
    tok.save(args.out)
    digest = hashlib.sha256(tok.model_proto).hexdigest()[:16]
    print(f"wrote {args.out}: vocab_size={tok.vocab_size} sha256={digest}")


if __name__ == "__main__":
    main()
