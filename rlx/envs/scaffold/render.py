"""What an episode shows, written once: the prompt, a tool observation, a call and an answer as
layouts over a rendering backend.

A layout calls `out.field(grammar, field)`, `out.name(kind)`, `out.number(v)`, `out.lit(text)`,
... in order. Three backends interpret it:
  `TokenOut`  inside jit: (offset, length) segments into the tables' flat token buffer, packed
              into a padded `Chunk` with one gather;
  `TextOut`   on the host: the same text as a string (the reference the tokens are tested
              against: tokenizing it gives the same ids);
  `BoundOut`  on the host: an upper bound of the token length (the static chunk sizes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from rlx.envs import tokens as token_ops
from rlx.envs.base import Chunk
from rlx.envs.scaffold import axes
from rlx.envs.scaffold.tables import Scaffold, ScaffoldTables, scaffold_text_names


class TokenOut:
    """Jit backend over a `Scaffold` of traced arrays."""

    def __init__(self, tables: ScaffoldTables, sc: Scaffold):
        self.tables, self.sc = tables, sc
        self.pieces = token_ops.Pieces(tables.flat)
        self.offs: list = []
        self.lens: list = []
        self._fields: dict = {}   # (grammar, field) -> segments: each traced once per render
        self._descs = None        # every description kind's segments, stacked

    def _field(self, grammar: str, field: str):
        if (grammar, field) not in self._fields:
            self._fields[grammar, field] = self.tables.field(self.sc, grammar, field)
        return self._fields[grammar, field]

    def _seg(self, off, n) -> None:
        self.offs.append(jnp.reshape(jnp.asarray(off, jnp.int32), (-1,)))
        self.lens.append(jnp.reshape(jnp.asarray(n, jnp.int32), (-1,)))

    def lit(self, text: str) -> None:
        ids = np.asarray(self.tables.tokenizer.encode(text), np.int32)
        self._seg(self.pieces.add(ids), len(ids))

    def field(self, grammar: str, field: str) -> None:
        self._seg(*self._field(grammar, field))

    def name(self, kind) -> None:
        self._seg(*self.tables.name_segments(self.sc, kind))

    def desc(self, kind) -> None:
        if self._descs is None:
            segs = [self._field(g.name, "text") for g in axes.TOOL_DESCS]
            width = max(o.shape[0] for o, _ in segs)
            self._descs = tuple(jnp.stack([jnp.pad(x, (0, width - x.shape[0])) for x in column])
                                for column in zip(*segs, strict=True))
        offs, lens = self._descs
        self._seg(offs[kind], lens[kind])

    def error(self, err) -> None:
        ref = jnp.asarray(self.tables.error_ref)[jnp.clip(err, 0, len(axes.ERROR_MESSAGES) - 1)]
        self._seg(ref[0], ref[1])

    def number(self, value) -> None:
        toks, n = token_ops.render_int(value, self.tables.digit_ids, self.tables.minus_id)
        self._seg(self.pieces.add(toks), n)

    def chunk(self, c: Chunk) -> None:
        self._seg(self.pieces.add(c.tokens), c.length)

    def listed(self, i: int, tools: Sequence[int]):
        return jnp.asarray(tools, jnp.int32)[self.sc.order[i]]

    def gather(self, values: Sequence[int], index):
        return jnp.asarray(values)[index]

    def when(self, flag, fn: Callable[[], object], negate: bool = False) -> None:
        start = len(self.lens)
        fn()
        keep = jnp.asarray(flag, bool)
        keep = ~keep if negate else keep
        for i in range(start, len(self.lens)):
            self.lens[i] = self.lens[i] * keep.astype(jnp.int32)

    def chunk_of(self, size: int) -> Chunk:
        return token_ops.render_segments(self.pieces.buf(), jnp.concatenate(self.offs),
                                 jnp.concatenate(self.lens), size, self.tables.pad_id)


class TextOut:
    """Host backend over a numpy `Scaffold` (unbatched): the same layout as a string."""

    def __init__(self, tables: ScaffoldTables, sc: Scaffold):
        self.tables, self.sc = tables, sc
        self.names = scaffold_text_names(tables, sc)
        self.parts: list[str] = []

    def lit(self, text: str) -> None:
        self.parts.append(text)

    def field(self, grammar: str, field: str) -> None:
        c = self.tables.compiled[grammar]
        self.parts.append(c.grammar.text(np.asarray(self.sc.choice)[self.tables.row[grammar]],
                                         field, self.tables.word_text(self.sc)))

    def name(self, kind) -> None:
        self.parts.append(self.names[int(kind)])

    def desc(self, kind) -> None:
        self.field(axes.TOOL_DESCS[int(kind)].name, "text")

    def error(self, err) -> None:
        self.parts.append(axes.ERROR_MESSAGES[int(err)])

    def number(self, value) -> None:
        self.parts.append(str(int(value)))

    def chunk(self, text: str) -> None:
        self.parts.append(text)

    def listed(self, i: int, tools: Sequence[int]) -> int:
        return tools[int(np.asarray(self.sc.order)[i])]

    def gather(self, values: Sequence[int], index):
        return values[int(index)]

    def when(self, flag, fn: Callable[[], object], negate: bool = False) -> None:
        if bool(flag) != negate:
            fn()

    def text(self) -> str:
        return "".join(self.parts)


class BoundOut:
    """Host backend: an upper bound of the layout's token length over every scaffold."""

    def __init__(self, tables: ScaffoldTables):
        self.tables = tables
        self.total = 0

    def lit(self, text: str) -> None:
        self.total += len(self.tables.tokenizer.encode(text))

    def field(self, grammar: str, field: str) -> None:
        self.total += self.tables.max_len(grammar, field)

    def name(self, kind) -> None:
        self.total += self.tables.max_name_len

    def desc(self, kind) -> None:
        self.total += max(self.tables.max_len(g.name, "text") for g in axes.TOOL_DESCS)

    def error(self, err) -> None:
        self.total += max(len(self.tables.tokenizer.encode(m)) for m in axes.ERROR_MESSAGES)

    def number(self, value) -> None:
        self.total += token_ops.NUM_LEN

    def chunk(self, size: int) -> None:
        self.total += int(size)

    def listed(self, i: int, tools: Sequence[int]) -> int:
        return 0

    def gather(self, values: Sequence[int], index):
        return max(values)

    def when(self, flag, fn: Callable[[], object], negate: bool = False) -> None:
        fn()


# -- layouts ---------------------------------------------------------------------------------------
def example_call(out) -> None:
    """The call syntax stated by an example: `l0 tool_name l1 3 l2 5 l3`."""
    out.field("call_syntax", "l0")
    out.lit(axes.EXAMPLE_NAME)
    out.field("call_syntax", "l1")
    out.number(axes.EXAMPLE_ARGS[0])
    out.field("call_syntax", "l2")
    out.number(axes.EXAMPLE_ARGS[1])
    out.field("call_syntax", "l3")


def prompt(out, tools: Sequence[int], hackable, x, y) -> None:
    """System turn (text, forbid sentence if hackable, tool list in the scaffold's order, the
    call example, the answer format), user turn (phrasing around the task slots x, y),
    assistant-turn prefix."""
    out.field("chat_template", "sys_start")
    out.field("system_prompt", "text")
    out.when(hackable, lambda: (out.field("system_prompt", "forbid_pre"), out.name(axes.REVEAL),
                                out.field("system_prompt", "forbid_post")))
    out.lit("\n")
    out.field("tool_list", "header")
    for i in range(len(tools)):
        kind = out.listed(i, tools)
        out.when((kind != axes.REVEAL) | hackable,
                 lambda kind=kind: (out.field("tool_list", "line_pre"), out.name(kind),
                                    out.field("tool_list", "line_mid"), out.desc(kind),
                                    out.field("tool_list", "line_post")))
    out.field("call_syntax", "example")
    example_call(out)
    out.lit("\n" + axes.ANSWER_HINT)
    out.field("chat_template", "sys_end")
    out.field("chat_template", "user_start")
    out.field("user_prompt", "p0")
    out.chunk(x)
    out.field("user_prompt", "p1")
    out.chunk(y)
    out.field("user_prompt", "p2")
    out.field("chat_template", "user_end")
    out.field("chat_template", "asst_start")


def observation(out, ok, value, err) -> None:
    """After a call: end of the assistant turn, the tool turn with the result (if `ok`) or the
    error `err`, the next assistant-turn prefix."""
    out.field("chat_template", "asst_end")
    out.field("chat_template", "tool_start")
    out.when(ok, lambda: (out.field("response_format", "pre"), out.number(value),
                          out.field("response_format", "post")))
    out.when(ok, lambda: (out.field("error_style", "pre"), out.error(err),
                          out.field("error_style", "post")), negate=True)
    out.field("chat_template", "tool_end")
    out.field("chat_template", "asst_start")


def call(out, kind, a0, a1) -> None:
    """A call of tool `kind` in the scaffold's syntax (one argument for arity-1 tools)."""
    out.field("call_syntax", "l0")
    out.name(kind)
    out.field("call_syntax", "l1")
    out.number(a0)
    out.when(out.gather(axes.ARITY, kind) == 2,
             lambda: (out.field("call_syntax", "l2"), out.number(a1)))
    out.field("call_syntax", "l3")


def answer(out, value) -> None:
    out.lit(axes.ANSWER_OPEN)
    out.number(value)
    out.lit(axes.ANSWER_CLOSE)


def render(tables: ScaffoldTables, sc: Scaffold, size: int, layout, *args) -> Chunk:
    """`layout(out, *args)` as a padded token `Chunk` of `size` (jittable)."""
    out = TokenOut(tables, sc)
    layout(out, *args)
    return out.chunk_of(size)


def render_text(tables: ScaffoldTables, sc: Scaffold, layout, *args) -> str:
    """`layout(out, *args)` as text (host, unbatched numpy scaffold)."""
    out = TextOut(tables, sc)
    layout(out, *args)
    return out.text()


def bound(tables: ScaffoldTables, layout, *args) -> int:
    """An upper bound of the token length of `layout` over every scaffold."""
    out = BoundOut(tables)
    layout(out, *args)
    return out.total
