"""Train the default tokenizer of the built-in tasks and write `rlx/assets/tokenizer.model`.

    python experiments/make_tokenizer.py [--out rlx/assets/tokenizer.model] [--vocab_size 512]

Deterministic: the corpus (`rlx.envs.corpus.scaffold_corpus`) is a seeded synthetic rendering of
every scaffold variant, and SentencePiece trains single-threaded without sampling, so rerunning
gives the same model bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rlx.envs.corpus import scaffold_corpus  # noqa: E402
from rlx.tokenizer import SentencePieceTokenizer  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rlx",
                           "assets", "tokenizer.model")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--vocab_size", type=int, default=512)
    ap.add_argument("--episodes", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tok = SentencePieceTokenizer.train(scaffold_corpus(args.episodes, args.seed),
                                       vocab_size=args.vocab_size)
    tok.save(args.out)
    digest = hashlib.sha256(tok.model_proto).hexdigest()[:16]
    print(f"wrote {args.out}: vocab_size={tok.vocab_size} sha256={digest}")


if __name__ == "__main__":
    main()
