"""Chat templates: render conversations with a model's own Jinja template, as transformers does.

RL prompts must match what the model saw in post-training, so rendering follows
`transformers.PreTrainedTokenizerBase.apply_chat_template` (tokenize=False): the same sandboxed
Jinja environment (trim_blocks, lstrip_blocks, loop controls, the `{% generation %}` tag), the same
helpers (`tojson` without HTML escaping, `raise_exception`, `strftime_now`, safe `dict` and
`namespace`), the same message clean-up (keys whose value is None dropped; `thinking`/`reasoning`
aliased to `reasoning_content` and back, so thinking blocks kept in history render), and the
special tokens of tokenizer_config.json (`bos_token`, `eos_token`, ...) as template variables.
Tests compare against transformers on templates shipped in tests/fixtures/.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

Message = Mapping[str, Any]
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for loss masks in
    transformers; rendering just emits the body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


class _TemplateDict:
    # `dict(...)` without attribute access to the dict type itself.
    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """`namespace(...)` that refuses underscore names (no route to interpreter internals)."""

    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot set underscore attributes on a namespace: {name!r}")


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now,
                       dict=_TemplateDict(), namespace=_Namespace)
    return env


def _plain(value: Any) -> Any:
    """JSON-like copies of the inputs, so templates never touch caller objects."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    # Subclasses (enums, numpy scalars) carry extra methods: reduce them to the base type.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if hasattr(value, "item"):
        return _plain(value.item())
    return f"<{type(value).__name__}>"


def normalize_messages(messages: Sequence[Message]) -> list[dict]:
    """Drops None-valued keys and aliases reasoning fields (`reasoning_content`, `thinking`,
    `reasoning`), as transformers does before rendering."""
    out = []
    for m in messages:
        if not isinstance(m, Mapping):
            raise TypeError(f"chat messages must be dicts, got {m!r}")
        m = {k: v for k, v in _plain(m).items() if v is not None}
        reasoning = next((m[k] for k in _REASONING_FIELDS if m.get(k) is not None), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


class ChatTemplate:
    """A compiled chat template plus the special tokens it may reference.

    Args:
      template: the Jinja source (tokenizer_config.json `chat_template`, or chat_template.jinja).
      special_tokens: template variables such as {"bos_token": "<s>", "eos_token": "</s>"}.
    """

    def __init__(self, template: str, special_tokens: Mapping[str, str] | None = None):
        self.source = template
        self.special_tokens = dict(special_tokens or {})
        self._template = _environment().from_string(template)

    def render(self, messages: Sequence[Message], *, tools: Sequence[Mapping] | None = None,
               documents: Sequence[Mapping] | None = None, add_generation_prompt: bool = False,
               **kwargs: Any) -> str:
        """The conversation as text. `tools` are JSON schemas ({"type": "function", "function":
        {...}}); extra keyword arguments (e.g. `enable_thinking=False`) reach the template and
        override special tokens of the same name."""
        if not messages:
            raise ValueError("cannot render an empty conversation; give at least one message")
        for tool in tools or ():
            if not isinstance(tool, Mapping):
                raise TypeError(f"tools must be JSON-schema dicts, got {tool!r}")
        variables = {**self.special_tokens, **_plain(kwargs)}
        return self._template.render(
            messages=normalize_messages(messages), tools=_plain(list(tools)) if tools else None,
            documents=_plain(list(documents)) if documents else None,
            add_generation_prompt=add_generation_prompt, **variables)


def select_template(chat_template: str | Sequence[Mapping] | Mapping | None,
                    tools: Sequence[Mapping] | None = None, name: str | None = None) -> str:
    """Picks the template source from tokenizer_config.json's `chat_template`, which is either
    a string or a list of {"name", "template"}: `name` if given, else "tool_use" when tools are
    passed and it exists, else "default" (transformers' rule)."""
    if chat_template is None:
        raise ValueError("this tokenizer has no chat template (tokenizer_config.json "
                         "'chat_template' or chat_template.jinja)")
    if isinstance(chat_template, str):
        if name is not None:
            raise ValueError(f"chat template name {name!r} given but the tokenizer has a "
                             f"single template")
        return chat_template
    named = ({t["name"]: t["template"] for t in chat_template}
             if not isinstance(chat_template, Mapping) else dict(chat_template))
    if name is None:
        name = "tool_use" if tools and "tool_use" in named else "default"
    if name not in named:
        raise ValueError(f"chat template {name!r} does not exist; available: {sorted(named)}")
    return named[name]
