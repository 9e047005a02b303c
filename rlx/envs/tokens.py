"""Jittable token-level helpers the envs build on: assembling padded chunks from variable-length
segments, rendering and parsing integers, and matching token patterns inside an action.

Everything works on fixed-size arrays with explicit lengths, so it jits and vmaps; nothing here
raises on bad input (out-of-range ids, missing patterns): it reports through returned flags.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlx.envs.base import Chunk

Array = jax.Array

#: Integers render with at most this many digits (|v| < 10**MAX_DIGITS fits int32).
MAX_DIGITS = 9
#: Largest magnitude a tool result may have; larger is an `out_of_range` tool error.
MAX_ABS = 10**MAX_DIGITS - 1
NUM_LEN = MAX_DIGITS + 1  # sign + digits


def concat(segments: Sequence[tuple[Array, Array]], size: int, pad_id: int = 0) -> Chunk:
    """Pack `(tokens [L_i], length)` segments back to back into a `Chunk` of `size` tokens.

    One scatter: every valid token goes to (number of valid tokens before it). Tokens past
    `size` are dropped and `length` is clipped (callers size chunks so this never happens).
    """
    toks = jnp.concatenate([jnp.asarray(t, jnp.int32).reshape(-1) for t, _ in segments])
    valid = jnp.concatenate([jnp.arange(np.shape(t)[-1]) < n for t, n in segments])
    pos = jnp.where(valid, jnp.cumsum(valid) - 1, size)
    out = jnp.full((size,), pad_id, jnp.int32).at[pos].set(toks, mode="drop")
    return Chunk(out, jnp.minimum(valid.sum(), size).astype(jnp.int32))


class Pieces:
    """A token buffer for `render_segments`: a constant flat table plus dynamic pieces appended
    inside jit; `add` returns each piece's offset."""

    def __init__(self, flat: np.ndarray):
        self._parts: list[Array] = [jnp.asarray(flat, jnp.int32)]
        self._size = int(np.shape(flat)[0])

    def add(self, tokens: Array) -> int:
        tokens = jnp.asarray(tokens, jnp.int32).reshape(-1)
        off = self._size
        self._parts.append(tokens)
        self._size += tokens.shape[0]
        return off

    def buf(self) -> Array:
        return jnp.concatenate(self._parts)


def render_segments(buf: Array, offs: Array, lens: Array, size: int, pad_id: int = 0) -> Chunk:
    """Pack segments `buf[offs[i] : offs[i] + lens[i]]` back to back into a `Chunk` of `size`.

    A constant number of ops whatever the number of segments (one compare of positions against
    segment ends, one gather), which keeps compile time low for prompts made of many pieces.
    `buf` is typically a flat table of every variant's tokens with dynamic pieces (numbers,
    random names) appended. Tokens past `size` are dropped and `length` is clipped.
    """
    lens = jnp.maximum(jnp.asarray(lens, jnp.int32), 0)
    offs = jnp.asarray(offs, jnp.int32)
    ends = jnp.cumsum(lens)
    p = jnp.arange(size, dtype=jnp.int32)
    seg = jnp.minimum((p[:, None] >= ends[None, :]).sum(-1), lens.shape[0] - 1)
    src = offs[seg] + p - (ends - lens)[seg]
    tok = jnp.take(buf, src, mode="clip")
    total = ends[-1]
    return Chunk(jnp.where(p < total, tok, pad_id).astype(jnp.int32),
                 jnp.minimum(total, size).astype(jnp.int32))


def render_int(value: Array, digit_ids: Array, minus_id: int) -> tuple[Array, Array]:
    """An int32 (|v| ≤ MAX_ABS, clipped otherwise) as digit tokens: (tokens [NUM_LEN], length)."""
    v = jnp.clip(jnp.asarray(value, jnp.int32), -MAX_ABS, MAX_ABS)
    mag = jnp.abs(v)
    powers = jnp.asarray([10**k for k in range(MAX_DIGITS - 1, -1, -1)], jnp.int32)
    digits = (mag // powers) % 10                                   # most significant first
    n_digits = jnp.maximum(1, MAX_DIGITS - jnp.argmax(jnp.append(digits[:-1] > 0, True)))
    # Shift the significant digits to the front, then prepend the sign.
    idx = jnp.arange(MAX_DIGITS) + (MAX_DIGITS - n_digits)
    sig = jnp.asarray(digit_ids)[jnp.take(digits, idx, mode="clip")]
    neg = v < 0
    toks = jnp.concatenate([jnp.asarray([minus_id], jnp.int32), sig.astype(jnp.int32)])
    toks = jnp.where(neg, toks, jnp.roll(toks, -1))
    return toks, (n_digits + neg).astype(jnp.int32)


def match_at(tokens: Array, length: Array, pos: Array, pattern: Array, plen: Array) -> Array:
    """True where `pattern[:plen]` occurs in `tokens[:length]` starting at `pos` (pos may be a
    vector of positions; the result then has its shape)."""
    pos = jnp.asarray(pos)
    j = jnp.arange(pattern.shape[-1])
    got = jnp.take(tokens, pos[..., None] + j, mode="fill", fill_value=-1)
    ok = (got == pattern) | (j >= plen)
    return ok.all(-1) & (pos + plen <= length) & (pos >= 0)


def find_first(tokens: Array, length: Array, pattern: Array, plen: Array) -> Array:
    """First start of `pattern[:plen]` in `tokens[:length]`, or `tokens.shape[0]` if absent."""
    n = tokens.shape[0]
    hits = match_at(tokens, length, jnp.arange(n), pattern, plen) & (plen > 0)
    return jnp.where(hits.any(), jnp.argmax(hits), n)


def parse_int(tokens: Array, length: Array, pos: Array, digit_value: Array,
              minus_id: int) -> tuple[Array, Array, Array]:
    """Parse `-?[0-9]{1,MAX_DIGITS}` at `pos`: (ok, value int32, end position).

    `digit_value` maps token id -> digit (or -1); ids outside it count as non-digits. More than
    MAX_DIGITS digits is not ok (the value would not fit int32)."""
    neg = jnp.take(tokens, pos, mode="fill", fill_value=-1) == minus_id
    start = pos + neg
    k = jnp.arange(MAX_DIGITS + 1)
    ids = jnp.take(tokens, start + k, mode="fill", fill_value=-1)
    d = jnp.take(digit_value, ids, mode="fill", fill_value=-1)
    d = jnp.where(start + k < length, d, -1)
    is_digit = d >= 0
    n = jnp.cumprod(is_digit).sum()
    ok = (n >= 1) & (n <= MAX_DIGITS)
    powers = jnp.where(k < n, 10 ** jnp.clip(n - 1 - k, 0, MAX_DIGITS - 1), 0)
    mag = (jnp.where(is_digit, d, 0) * powers).sum()
    value = jnp.where(neg, -mag, mag).astype(jnp.int32)
    return ok, jnp.where(ok, value, 0), (start + n).astype(jnp.int32)


def randint(bits: Array, lo: Array, hi: Array) -> Array:
    """Integers in [lo, hi) from uint32 random `bits` (same shape after broadcasting).

    `bits % span`: biased by at most span / 2**31 (negligible for the small ranges here). The
    envs draw one `jax.random.bits` per reset and derive everything from it, because each
    `jax.random.randint` costs a second of XLA compile time on CPU.
    """
    span = jnp.maximum(jnp.asarray(hi) - jnp.asarray(lo), 1)
    return (jnp.asarray(lo) + (bits >> 1).astype(jnp.int32) % span).astype(jnp.int32)


def write_chunk(buf: Array, pos: Array, chunk: Chunk) -> Array:
    """`buf` with `chunk.tokens[:chunk.length]` written at `pos` (what does not fit is dropped)."""
    i = jnp.arange(chunk.tokens.shape[-1])
    idx = jnp.where(i < chunk.length, pos + i, buf.shape[0])
    return buf.at[idx].set(chunk.tokens.astype(buf.dtype), mode="drop")
