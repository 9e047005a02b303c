"""Reading a policy's round in its scaffold's call syntax, at the token level, inside jit.

A round is an answer (`<answer>N</answer>`) or a call `l0 NAME l1 ARG [l2 ARG] l3`, where
l0..l3 are the episode's call-syntax delimiters and NAME one of the listed tools' names. Nothing
raises: a round that is neither comes back as an error kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlx.envs import tokens as token_ops
from rlx.envs.base import Chunk
from rlx.envs.scaffold import axes
from rlx.envs.scaffold.tables import Scaffold, ScaffoldTables

Array = jax.Array


class Parsed(NamedTuple):
    is_answer: Array   # bool: the round is an answer
    answer_ok: Array   # bool: the answer is a well-formed integer followed by the closer
    answer: Array      # int32
    kind: Array        # int32 tool kind of the call
    a0: Array          # int32 first argument (0 if absent)
    a1: Array          # int32 second argument (0 if absent)
    err: Array         # int32 error kind (`axes.ERROR_KINDS`), -1 for a well-formed call


def field_tokens(tables: ScaffoldTables, sc: Scaffold, grammar: str, field: str) -> Chunk:
    """A grammar field of the scaffold as a padded token chunk (its longest length)."""
    offs, lens = tables.field(sc, grammar, field)
    return token_ops.render_segments(jnp.asarray(tables.flat), offs, lens,
                             max(1, tables.max_len(grammar, field)), tables.pad_id)


def name_tokens(tables: ScaffoldTables, sc: Scaffold, kind) -> Chunk:
    offs, lens = tables.name_segments(sc, kind)
    return token_ops.render_segments(jnp.asarray(tables.flat), offs, lens, tables.max_name_len,
                             tables.pad_id)


def parse(tables: ScaffoldTables, tools: Sequence[int], action: Chunk, sc: Scaffold,
          hackable: Array) -> Parsed:
    """Read an answer or a call of one of `tools` from the action tokens."""
    tb = tables
    tokens, n = action.tokens.astype(jnp.int32), action.length
    size = tokens.shape[0]
    valid = jnp.arange(size) < n
    l0, l1, l2, l3 = (field_tokens(tb, sc, "call_syntax", f) for f in ("l0", "l1", "l2", "l3"))
    is_open = (tokens == tb.answer_open) & valid
    i_ans = jnp.where(is_open.any(), jnp.argmax(is_open), size)
    i_call = token_ops.find_first(tokens, n, l0.tokens, l0.length)
    is_answer = (i_ans < size) & (i_ans < i_call)
    ok_a, ans, end_a = token_ops.parse_int(tokens, n, i_ans + 1, tb.digit_value, tb.minus_id)
    answer_ok = ok_a & token_ops.match_at(tokens, n, end_a, jnp.asarray([tb.answer_close]), 1)

    found = i_call < size
    start = i_call + l0.length
    kinds = jnp.asarray(tools, jnp.int32)
    names = [name_tokens(tb, sc, k) for k in tools]
    available = (kinds != axes.REVEAL) | hackable
    hit = jnp.stack([token_ops.match_at(tokens, n, start, nm.tokens, nm.length)
                     & token_ops.match_at(tokens, n, start + nm.length, l1.tokens, l1.length)
                     for nm in names]) & available
    known = hit.any()
    which = jnp.argmax(hit)
    kind = kinds[which]
    name_len = jnp.stack([nm.length for nm in names])[which]
    p0 = start + name_len + l1.length
    ok0, a0, e0 = token_ops.parse_int(tokens, n, p0, tb.digit_value, tb.minus_id)
    close1 = token_ops.match_at(tokens, n, e0, l3.tokens, l3.length)
    more1 = token_ops.match_at(tokens, n, e0, l2.tokens, l2.length)
    ok1, a1, e1 = token_ops.parse_int(tokens, n, e0 + l2.length, tb.digit_value, tb.minus_id)
    close2 = token_ops.match_at(tokens, n, e1, l3.tokens, l3.length)
    more2 = token_ops.match_at(tokens, n, e1, l2.tokens, l2.length)
    n_args = jnp.where(close1, 1, jnp.where(more1 & ok1 & close2, 2,
                                            jnp.where(more1 & ok1 & more2, 3, 0)))
    err = jnp.where(~found, axes.NO_CALL, jnp.where(
        ~known, axes.UNKNOWN_TOOL, jnp.where(
            ~ok0 | (n_args == 0), axes.MALFORMED, jnp.where(
                n_args != jnp.asarray(axes.ARITY)[kind], axes.ARG_COUNT, -1))))
    return Parsed(is_answer=is_answer, answer_ok=answer_ok, answer=ans, kind=kind,
                  a0=jnp.where(n_args >= 1, a0, 0), a1=jnp.where(n_args == 2, a1, 0),
                  err=err.astype(jnp.int32))
