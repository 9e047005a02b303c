"""Supervised warm-start data: oracle demonstrations mixed over scaffold-axis sets, plus a copy
corpus and a recall corpus that teach reading from the context.

`sft.mixture` is a comma-separated list of `source:weight`. A source is an axes preset or axis
names joined by '+' (the axes that vary in that source's episodes, train split), or `copy`:
rows packed with short random token sequences, each followed by a separator and by itself, with
the loss on the repeats (the induction pattern a policy needs to copy a tool name or a number
from its context). Each batch holds every source in proportion to its weight (rows assigned by
cumulative counts). Stages are joined by ';', each but the last ending at the step given by
'@N', e.g. 'copy:1@400;tools_only:1,all_axes:3,copy:1' (`parse_schedule`).

    make_demos(env, env_params, batch=32, max_len=512, max_rounds=4,
               mixture="tools_only:1,all_axes:2,copy:1") -> demos(key) -> (tokens, mask)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rlx.envs.scaffold.tables import axes_mask
from rlx.rollout.scripted import oracle_fn, play

COPY = "copy"
RECALL = "recall"
CORPORA = (COPY, RECALL)


def parse_schedule(spec: str) -> list[tuple[str, int | None]]:
    """'m1@N1;m2@N2;m3' -> [(m1, N1), (m2, N2), (m3, None)]: mixture m1 for SFT steps below N1,
    m2 below N2, then m3 to the end. Every mixture is checked."""
    stages = []
    for item in spec.split(";"):
        mixture, _, until = item.partition("@")
        parse_mixture(mixture)
        try:
            step = int(until) if until else None
        except ValueError:
            step = -1
        if step is not None and (step <= 0 or (stages and step <= stages[-1][1])):
            raise ValueError(f"sft.mixture stage {item!r}: '@N' must be a step count above the "
                             f"previous stage's, e.g. 'copy:1@400;all_axes:1'")
        stages.append((mixture, step))
    if stages[-1][1] is not None:
        stages.append(stages[-1][:1] + (None,))    # the last mixture runs to the end
    return stages


def parse_mixture(mixture: str) -> list[tuple[str, float]]:
    """'a:1,b:2' -> [(a, 1.0), (b, 2.0)], with every source checked."""
    out = []
    for item in filter(None, (s.strip() for s in mixture.split(","))):
        source, _, weight = item.partition(":")
        try:
            w = float(weight or 1.0)
        except ValueError:
            w = -1.0
        if w <= 0:
            raise ValueError(f"sft.mixture item {item!r}: the weight must be a positive number "
                             f"(source:weight)")
        if source not in CORPORA:
            axes_mask(source)  # raises KeyError naming the unknown axes
        out.append((source, w))
    if not out:
        raise ValueError(f"sft.mixture={mixture!r} names no source; e.g. 'all_axes:1,copy:1'")
    return out


def row_counts(mixture: list[tuple[str, float]], batch: int) -> list[int]:
    """Rows per source: proportional to the weights, summing to `batch` (largest remainders)."""
    w = np.array([x for _, x in mixture], np.float64)
    exact = batch * w / w.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts))[: batch - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def copy_rows(key: jax.Array, rows: int, max_len: int, ids: np.ndarray, pad_id: int,
              sep_id: int, span: tuple[int, int] = (4, 32)):
    """`rows` rows packed with pieces `x SEP x`: per row a length n uniform in `span`, then as
    many whole pieces as fit, each x drawn uniformly from `ids`. The loss mask covers every
    repeat. Many short pieces per row is what makes the copy (induction) skill appear within a
    few hundred steps; one long piece per row did not in 400."""
    k_len, k_tok = jax.random.split(key)
    lo, hi = span[0], min(span[1], (max_len - 1) // 2)
    n = jax.random.randint(k_len, (rows, 1), lo, hi + 1)
    x = jnp.asarray(ids)[jax.random.randint(k_tok, (rows, max_len), 0, len(ids))]
    pos = jnp.arange(max_len)[None, :]
    piece, off = pos // (2 * n + 1), pos % (2 * n + 1)
    src = piece * (2 * n + 1) + jnp.where(off > n, off - n - 1, off)
    tokens = jnp.take_along_axis(x, src, axis=1)
    tokens = jnp.where(off == n, sep_id, tokens)
    whole = (piece + 1) * (2 * n + 1) <= max_len          # the last partial piece is padding
    tokens = jnp.where(whole, tokens, pad_id)
    return tokens.astype(jnp.int32), whole & (off > n)


def recall_rows(key: jax.Array, rows: int, max_len: int, ids: np.ndarray, pad_id: int,
                sep_id: int, entries: tuple[int, int] = (2, 5), name_len: tuple[int, int] = (1, 4)):
    """`rows` rows packed with lookup pieces. Per row a list size n uniform in `entries` and a
    name length L uniform in `name_len`; each piece is n entries `name(L ids) desc(1 id) SEP`,
    then the query `SEP desc_t name_t` for an entry t drawn per piece; ids uniform in `ids`.
    The loss mask covers the queried name, except where its desc occurs twice in the list
    (ambiguous). The last partial piece is padding."""
    k_n, k_len, k_t, k_tok = jax.random.split(key, 4)
    n = jax.random.randint(k_n, (rows, 1), entries[0], entries[1] + 1)
    name = jax.random.randint(k_len, (rows, 1), name_len[0], name_len[1] + 1)
    entry = name + 2                                   # name, desc, SEP
    size = n * entry + 2 + name                        # the list, SEP, desc, name
    x = jnp.asarray(ids)[jax.random.randint(k_tok, (rows, max_len), 0, len(ids))]
    pos = jnp.arange(max_len)[None, :]
    piece, off = pos // size, pos % size
    start = piece * size
    draw = jax.random.uniform(k_t, (rows, max_len))
    target = jnp.minimum(jnp.take_along_axis(draw, piece, axis=1) * n, n - 1).astype(jnp.int32)
    in_list = off < n * entry
    q = off - n * entry                                # position within the query
    target_at = start + target * entry
    src = jnp.where(in_list, pos, jnp.where(q == 1, target_at + name, target_at + q - 2))
    tokens = jnp.take_along_axis(x, jnp.clip(src, 0, max_len - 1), axis=1)
    sep = jnp.where(in_list, off % entry == entry - 1, q == 0)
    whole = start + size <= max_len
    tokens = jnp.where(whole, jnp.where(sep, sep_id, tokens), pad_id)
    # A desc listed twice makes the query ambiguous: no loss on that piece.
    desc_of = lambda e: jnp.take_along_axis(x, jnp.clip(start + e * entry + name, 0, max_len - 1),
                                            axis=1)
    wanted = desc_of(target)
    twice = sum(((e < n) & (e != target) & (desc_of(e) == wanted)).astype(jnp.int32)
                for e in range(entries[1])) > 0
    return tokens.astype(jnp.int32), whole & ~in_list & (q >= 2) & ~twice


def make_demos(env, env_params, batch: int, max_len: int, max_rounds: int, mixture: str):
    """A jittable `demos(key) -> (tokens [batch, max_len], loss_mask [batch, max_len])`."""
    sources = parse_mixture(mixture)
    if any(source not in CORPORA for source, _ in sources) and max_len <= env.max_prompt_len:
        raise ValueError(f"sft.max_len={max_len} leaves no room for a demonstration after "
                         f"prompts of up to {env.max_prompt_len} tokens (sft.mixture="
                         f"{mixture!r}); allowed: sft.max_len > {env.max_prompt_len}")
    counts = row_counts(sources, batch)
    tok = env.tokenizer
    # Copy sequences use every id that decodes to printable text (no specials, no byte pieces).
    ids = np.array([i for i in range(tok.vocab_size) if i not in (tok.pad_id, tok.eos_id)
                    and (t := tok.decode([i])) and t.isprintable()], np.int32)

    def demos(key):
        toks, masks = [], []
        for i, ((source, _), n) in enumerate(zip(sources, counts, strict=True)):
            if n == 0:
                continue
            k = jax.random.fold_in(key, i)
            if source == COPY:
                t, m = copy_rows(k, n, max_len, ids, tok.pad_id, tok.eos_id)
            elif source == RECALL:
                t, m = recall_rows(k, n, max_len, ids, tok.pad_id, tok.eos_id)
            else:
                params = env_params.replace(vary=jnp.asarray(axes_mask(source)),
                                            split=jnp.zeros_like(env_params.split))
                ep = play(env, params, k, n, oracle_fn(env), max_rounds=max_rounds,
                          max_len=max_len)
                t, m = ep.tokens, ep.policy_mask
            toks.append(t)
            masks.append(m)
        return jnp.concatenate(toks), jnp.concatenate(masks)

    return demos
