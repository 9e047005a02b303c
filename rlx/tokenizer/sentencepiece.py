"""SentencePiece tokenizer: trained in-process from an iterator of text, saved and loaded as one
`.model` file, with every markup token kept whole.

Training choices, and why:
- `split_digits`: every digit is its own piece, so numbers are digit sequences that envs and
  rewards can render and parse at the token level.
- markup tokens (`MARKUP_TOKENS`: think/tool/answer tags, chat role markers, XML closers) are
  user-defined symbols: each is exactly one id wherever it occurs in text.
- `byte_fallback`: characters outside the learned pieces become byte pieces, so no text is ever
  unknown (decode(encode(s)) == s for every string).
- identity normalization, no dummy prefix and no whitespace squashing: spans encoded separately
  concatenate to the ids of a text whose decode is the concatenation of the spans. The envs rely
  on this to render prompts from independently tokenized pieces.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence

import sentencepiece as spm

from rlx.tokenizer.base import Tokenizer

#: Markup that every rlx tokenizer keeps as single tokens. Reasoning, tool calls, answers and the
#: role markers / closers of the chat templates and call syntaxes the scaffolds use.
MARKUP_TOKENS: tuple[str, ...] = (
    "<think>", "</think>",
    "<tool_call>", "</tool_call>",
    "<tool_response>", "</tool_response>",
    "<answer>", "</answer>",
    # Call wrappers and the XML invoke syntax (a call closer must be one token).
    "<call>", "</call>", "<fn>", "</fn>",
    "<invoke", "</invoke>", "<parameter", "</parameter>",
    # Chat-template role markers and separators.
    "<|im_start|>", "<|im_end|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<start_of_turn>", "<end_of_turn>", "<|end|>",
)

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

_DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets",
                              "tokenizer.model")


class SentencePieceTokenizer(Tokenizer):
    """A `Tokenizer` over a SentencePiece model (pad=0, unk=1, bos=2, eos=3)."""

    def __init__(self, model_proto: bytes):
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 512,
              markup: Sequence[str] = MARKUP_TOKENS, model_type: str = "bpe",
              seed_sentences: int = 1_000_000,
              pretokenization_delimiter: str = "") -> SentencePieceTokenizer:
        """Train on `texts` (any iterable of strings) in-process; deterministic for a given input.

        `vocab_size` counts everything: 4 specials, 256 byte pieces, the markup and learned pieces.
        `pretokenization_delimiter`: learned pieces never span it (it is dropped from the text).
        """
        markup = list(dict.fromkeys(markup))
        proto = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=proto, vocab_size=vocab_size,
            model_type=model_type, byte_fallback=True, split_digits=True,
            user_defined_symbols=markup, normalization_rule_name="identity",
            add_dummy_prefix=False, remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True, character_coverage=1.0,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            hard_vocab_limit=True, num_threads=1, input_sentence_size=seed_sentences,
            shuffle_input_sentence=False, max_sentence_length=1 << 16, minloglevel=2,
            pretokenization_delimiter=pretokenization_delimiter)
        return cls(proto.getvalue())

    @classmethod
    def load(cls, path: str) -> SentencePieceTokenizer:
        with open(path, "rb") as f:
            return cls(f.read())

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(self._proto)

    @property
    def model_proto(self) -> bytes:
        return self._proto

    # -- Tokenizer interface ------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def pad_id(self) -> int:
        return self._sp.pad_id()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    @property
    def bos_id(self) -> int | None:
        b = self._sp.bos_id()
        return None if b < 0 else b

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def token_id(self, piece: str) -> int:
        i = self._sp.piece_to_id(piece)
        # piece_to_id maps absent pieces to unk; only '<unk>' itself may legitimately be unk.
        if i == self._sp.unk_id() and piece != self._sp.id_to_piece(self._sp.unk_id()):
            raise KeyError(f"{piece!r} is not a single token of this tokenizer")
        return i

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))


_DEFAULT: SentencePieceTokenizer | None = None


def load_default() -> SentencePieceTokenizer:
    """The committed tokenizer of the built-in tasks (`rlx/assets/tokenizer.model`, vocab 1024),
    produced by `experiments/make_tokenizer.py`. Cached: every caller gets the same object."""
    global _DEFAULT
    if _DEFAULT is None:
        if not os.path.exists(_DEFAULT_MODEL):
            raise FileNotFoundError(f"{_DEFAULT_MODEL} is missing; run "
                                    "`python -m experiments.make_tokenizer` to create it")
        _DEFAULT = SentencePieceTokenizer.load(_DEFAULT_MODEL)
    return _DEFAULT
