"""Hugging Face tokenizers behind the rlx `Tokenizer` interface, with the model's chat template.

    tok = rlx.tokenizer.hf.load("/ckpt/Qwen3-0.6B")      # tokenizer.json (+ tokenizer_config.json)
    ids = tok.encode_chat(messages, tools=tools, add_generation_prompt=True)

A directory with `tokenizer.json` gives an `HFTokenizer` (the `tokenizers` fast tokenizer, the one
transformers' fast tokenizers wrap); one with only a SentencePiece `tokenizer.model` gives a
`SentencePieceTokenizer`. Special tokens (bos/eos/pad) and the chat template come from
`tokenizer_config.json` (and `chat_template.jinja` where present).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from rlx.files import read_json_object
from rlx.tokenizer.base import Tokenizer

# Named special tokens of tokenizer_config.json, passed to chat templates as variables.
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                      "cls_token", "mask_token")
Message = Mapping[str, Any]


def _content(token: Any) -> str | None:
    """A special token from tokenizer_config.json: a string or an AddedToken dict."""
    if token is None or isinstance(token, str):
        return token
    if isinstance(token, Mapping) and "content" in token:
        return token["content"]
    raise ValueError(f"unrecognized special token entry {token!r}")


class HFTokenizer(Tokenizer):
    """A `tokenizers.Tokenizer` (tokenizer.json) with special tokens and a chat template.

    `pad_id` is the config's pad token, or the EOS id where the model defines none (rows are
    masked by length, so padding only needs to be a valid id).
    """

    def __init__(self, tokenizer, config: Mapping[str, Any] | None = None,
                 chat_template: str | Sequence[Mapping] | None = None):
        self._tok = tokenizer
        self.config = dict(config or {})
        self.special_tokens = {k: _content(self.config.get(k)) for k in SPECIAL_TOKEN_KEYS
                               if _content(self.config.get(k)) is not None}
        self.chat_template = chat_template if chat_template is not None else self.config.get(
            "chat_template")
        if self.eos_token is None:
            raise ValueError("tokenizer_config.json defines no eos_token; rlx needs one "
                             "(set 'eos_token')")

    @classmethod
    def from_dir(cls, path: str) -> HFTokenizer:
        """Reads tokenizer.json, tokenizer_config.json (and special_tokens_map.json,
        chat_template.jinja / chat_template.json where present) from a model directory."""
        try:
            import tokenizers
        except ImportError as e:
            raise ImportError("reading a Hugging Face tokenizer needs the `tokenizers` package: "
                              'pip install "rlx[hf]" (or -r requirements-hf.txt)') from e

        tok_file = os.path.join(path, "tokenizer.json")
        if not os.path.exists(tok_file):
            raise FileNotFoundError(f"{path} has no tokenizer.json")
        try:
            tok = tokenizers.Tokenizer.from_file(tok_file)
        except Exception as e:  # noqa: BLE001 -- tokenizers raises a bare Exception
            raise ValueError(f"{tok_file} cannot be read as a tokenizer: {e}") from e
        config: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            file = os.path.join(path, name)
            if os.path.exists(file):
                config.update(read_json_object(file))
        template = None
        jinja_file = os.path.join(path, "chat_template.jinja")
        json_file = os.path.join(path, "chat_template.json")
        if os.path.exists(jinja_file):
            with open(jinja_file) as f:
                template = f.read()
        elif os.path.exists(json_file):
            template = read_json_object(json_file).get("chat_template")
            if not isinstance(template, str):
                raise ValueError(f"{json_file} has no string 'chat_template'")
        return cls(tok, config, template)

    # -- Tokenizer interface ------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")

    @property
    def eos_id(self) -> int:
        return self.token_id(self.eos_token)

    @property
    def bos_id(self) -> int | None:
        bos = self.special_tokens.get("bos_token")
        return None if bos is None else self.token_id(bos)

    @property
    def pad_id(self) -> int:
        pad = self.special_tokens.get("pad_token")
        return self.eos_id if pad is None else self.token_id(pad)

    def encode(self, text: str) -> list[int]:
        """Text -> ids; no BOS/EOS or other post-processor tokens are added."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text, special and markup tokens included as their text."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_id(self, piece: str) -> int:
        i = self._tok.token_to_id(piece)
        if i is None:
            raise KeyError(f"{piece!r} is not a single token of this tokenizer")
        return i

    def id_to_piece(self, i: int) -> str:
        return self._tok.id_to_token(int(i))

    # -- chat ---------------------------------------------------------------------------------
    def template(self, tools: Sequence[Mapping] | None = None, name: str | None = None):
        """The compiled `ChatTemplate` (a named one, or "tool_use" when tools are given and the
        tokenizer has it). Needs jinja2."""
        from rlx.tokenizer.chat import ChatTemplate, select_template

        return ChatTemplate(select_template(self.chat_template, tools, name), self.special_tokens)

    def apply_chat_template(self, messages: Sequence[Message], *,
                            tools: Sequence[Mapping] | None = None,
                            add_generation_prompt: bool = False,
                            template_name: str | None = None, **kwargs: Any) -> str:
        """The conversation rendered as text, equal to transformers'
        `apply_chat_template(..., tokenize=False)`."""
        return self.template(tools, template_name).render(
            messages, tools=tools, add_generation_prompt=add_generation_prompt, **kwargs)

    def encode_chat(self, messages: Sequence[Message], **kwargs: Any) -> list[int]:
        """Rendered and encoded (special tokens in the text become their ids), equal to
        transformers' `apply_chat_template(..., tokenize=True)`."""
        return self.encode(self.apply_chat_template(messages, **kwargs))


def load(path: str) -> Tokenizer:
    """The tokenizer of a Hugging Face model directory: `HFTokenizer` from tokenizer.json, or
    a `SentencePieceTokenizer` when the directory only has a SentencePiece tokenizer.model."""
    if os.path.exists(os.path.join(path, "tokenizer.json")):
        return HFTokenizer.from_dir(path)
    if os.path.exists(os.path.join(path, "tokenizer.model")):
        from rlx.tokenizer.sentencepiece import SentencePieceTokenizer

        return SentencePieceTokenizer.load(os.path.join(path, "tokenizer.model"))
    raise FileNotFoundError(f"{path}: no tokenizer.json or tokenizer.model")


__all__ = ["HFTokenizer", "load"]
