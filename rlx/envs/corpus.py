"""The text the default tokenizer is trained on: every atom and literal of the scaffold grammars
(both splits), tool names in every style, and random expressions and numbers.

Plain Python (no tokenizer needed): `experiments/make_tokenizer.py` feeds it to SentencePiece.
Lines are pre-split with `DELIMITER` between letter runs and every other character, so the
learned pieces are runs of letters only (plus the markup tokens and single characters): a
segment boundary between a letter and a non-letter is then always a token boundary, and
rendering a prompt piece by piece gives the ids of tokenizing the whole prompt.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterator

from rlx.envs import kvlookup, toolcalc
from rlx.envs.scaffold import axes as A
from rlx.tokenizer.sentencepiece import MARKUP_TOKENS

DELIMITER = "\t"
_SPLIT = re.compile("|".join(re.escape(m) for m in sorted(MARKUP_TOKENS, key=len, reverse=True))
                    + r"|[A-Za-z]+|.", re.S)


def presplit(text: str) -> str:
    """`text` with `DELIMITER` between letter runs, markup tokens and single other characters."""
    return DELIMITER.join(_SPLIT.findall(text))


#: Key names the call syntax listed before its keys were drawn from the name atoms; the
#: committed tokenizer was trained on them, so they stay in its corpus.
RETIRED_KEYS = ("tool", "function", "fn", "op", "use", "target", "method", "args", "params",
                "input", "kwargs", "payload", "x", "y", "lhs", "rhs", "first", "second", "left",
                "right", "p", "q", "base", "delta", "src", "dst")


def _strings() -> list[str]:
    out = list(A.ERROR_MESSAGES) + list(A.CANONICAL_NAMES) + list(toolcalc.OP_TEXT)
    out += [A.EXAMPLE_NAME, A.ANSWER_HINT, A.ANSWER_OPEN, A.ANSWER_CLOSE]
    for g in (*A.STATIC_GRAMMARS, toolcalc.USER_PROMPTS, kvlookup.USER_PROMPTS):
        out += g.strings()
    return out + list(RETIRED_KEYS)


def scaffold_corpus(n_names: int = 20000, seed: int = 0) -> Iterator[str]:
    """Deterministic stream of pre-split corpus lines."""
    rng = random.Random(seed)
    yield presplit(string.ascii_letters + string.digits + string.punctuation + " \n")
    strings = _strings()
    for _ in range(20):          # prose and markup weigh like a few thousand episodes
        for s in strings:
            yield presplit(s)
    for _ in range(n_names):
        style = rng.randrange(len(A.NAME_STYLES))
        first, second = rng.sample(range(len(A.SYLLABLES)), 2)
        yield presplit(A.syllable_name(style, first, second) + " " + str(rng.randint(-999, 9999)))
