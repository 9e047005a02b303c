"""Tokenizers behind one interface (`Tokenizer`): SentencePiece models trained in-process, and
Hugging Face tokenizer.json files.

`load_default()` gives the small SentencePiece tokenizer of the built-in tasks
(`rlx/assets/tokenizer.model`); `MARKUP_TOKENS` lists the markup kept as single tokens.
"""

from rlx.tokenizer import hf  # Hugging Face tokenizer.json + chat templates: rlx.tokenizer.hf.load
from rlx.tokenizer.base import Tokenizer
from rlx.tokenizer.sentencepiece import MARKUP_TOKENS, SentencePieceTokenizer, load_default

__all__ = ["MARKUP_TOKENS", "hf", "SentencePieceTokenizer", "Tokenizer", "load_default"]
