"""SentencePiece tokenizer: round trips, markup tokens as single ids, byte fallback, save/load,
and that the committed default model is what experiments/make_tokenizer.py produces."""

import os

import pytest

from experiments.make_tokenizer import VOCAB_SIZE
from rlx.envs.corpus import DELIMITER, scaffold_corpus
from rlx.tokenizer import MARKUP_TOKENS, SentencePieceTokenizer, Tokenizer, load_default

TEXTS = [
    "Compute ((3 + 4) * 12) - 5 = ?",
    "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 123, \"b\": -45}}</tool_call>",
    "<think>carry the 1</think><answer>-9081726354</answer>",
    "  leading spaces, two  inner,\ttab and\n\nnewlines \n",
    "unicode: café, 数字 7, emoji 🙂",
    "".join(MARKUP_TOKENS) + " between " + " ".join(MARKUP_TOKENS),
]


@pytest.fixture(scope="module")
def small():
    corpus = ["the tools add and sub take numbers 0123456789 <answer>1</answer>"] * 20
    return SentencePieceTokenizer.train(corpus, vocab_size=360)


@pytest.fixture(scope="module")
def default():
    return load_default()


@pytest.mark.parametrize("which", ["small", "default"])
def test_round_trip_and_markup(which, request):
    tok: Tokenizer = request.getfixturevalue(which)
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text
    for m in MARKUP_TOKENS:
        ids = tok.encode(m)
        assert ids == [tok.token_id(m)], m
        # Also inside text: still exactly one id, surrounded by the text's own tokens.
        ids = tok.encode(f"x{m}7")
        assert tok.token_id(m) in ids and tok.decode(ids) == f"x{m}7"
    assert 0 <= min(tok.encode(TEXTS[4])) and max(tok.encode(TEXTS[4])) < tok.vocab_size


@pytest.mark.parametrize("which", ["small", "default"])
def test_digits_are_single_pieces(which, request):
    tok = request.getfixturevalue(which)
    digit_ids = [tok.encode(str(d)) for d in range(10)]
    assert all(len(i) == 1 for i in digit_ids)
    assert tok.encode("9081726354") == [digit_ids[int(c)][0] for c in "9081726354"]


def test_segments_concatenate(default):
    # The envs render prompts from separately encoded spans; decoding must give the joined text.
    parts = ["System: ", "You are", " a tool user.\n", "- ", "add", ": ", "adds", "\n\n", "12"]
    ids = [i for p in parts for i in default.encode(p)]
    assert default.decode(ids) == "".join(parts)


def test_specials_and_errors(default):
    assert default.vocab_size <= 1024
    assert (default.pad_id, default.bos_id, default.eos_id) == (0, 2, 3)
    with pytest.raises(KeyError, match="not a single token"):
        default.token_id("<not_a_markup>")


def test_save_load(tmp_path, small):
    path = os.path.join(tmp_path, "t.model")
    small.save(path)
    again = SentencePieceTokenizer.load(path)
    assert again.model_proto == small.model_proto
    assert again.encode(TEXTS[1]) == small.encode(TEXTS[1])


def test_default_is_reproducible(default):
    # Same corpus and settings as experiments/make_tokenizer.py's defaults (--names 20000
    # --seed 0 --vocab_size VOCAB_SIZE, pieces never spanning the corpus's pre-split delimiter).
    tok = SentencePieceTokenizer.train(scaffold_corpus(20000, 0), vocab_size=VOCAB_SIZE,
                                       pretokenization_delimiter=DELIMITER)
    assert tok.model_proto == default.model_proto
