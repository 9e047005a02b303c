"""Tokenizers behind one interface (`Tokenizer`): SentencePiece models trained in-process, and
Hugging Face tokenizer.json files."""

from rlx.tokenizer.base import Tokenizer

__all__ = ["Tokenizer"]
