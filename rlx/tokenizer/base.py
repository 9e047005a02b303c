"""The tokenizer interface every backend (SentencePiece, Hugging Face tokenizer.json) implements.

Text exists only at the edges: envs, rewards and the rollout see token ids. Markup tokens
(`<think>`, `<tool_call>`, role markers, ...) are single ids in every backend, looked up by
`token_id`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence


class Tokenizer(abc.ABC):
    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids (the model's vocab_size must be at least this)."""

    @property
    @abc.abstractmethod
    def pad_id(self) -> int:
        """Id used for padding."""

    @property
    @abc.abstractmethod
    def eos_id(self) -> int:
        """End-of-sequence id."""

    @property
    @abc.abstractmethod
    def bos_id(self) -> int | None:
        """Beginning-of-sequence id, or None if the tokenizer has none."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Text -> ids (no BOS/EOS added)."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text (markup tokens rendered as their text)."""

    @abc.abstractmethod
    def token_id(self, piece: str) -> int:
        """The single id of a whole token such as '<tool_call>'; KeyError naming it if absent."""
