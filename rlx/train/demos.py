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
GLOSSARY = "glossary"
CORPORA = (COPY, RECALL, GLOSSARY)


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


def glossary_rows(key: jax.Array, rows: int, max_len: int, atoms: np.ndarray, seps: np.ndarray,
                  words: np.ndarray, marks: np.ndarray, query_id: int, space_id: int,
                  newline_id: int, pad_id: int, entries: tuple[int, int] = (2, 5),
                  desc_len: tuple[int, int] = (1, 3)):
    """`rows` rows packed with glossaries: lists of styled names, each with a description in
    words, then a query line giving one description, whose name is the target.

    Per row a list size n uniform in `entries` and a description length D uniform in
    `desc_len`; each piece is n entry lines `mark ␣ name mark' ␣ desc \n` and one query line
    `? ␣ desc mark' ␣ name \n` (the marks drawn per piece from `marks`, `?` being `query_id`).
    A name is `atom sep atom` in one casing (`atoms`: [casings, A] ids, `seps`: the separator ids) and a
    description D ids of `words`. This is the retrieval a tool list asks for (find the entry by
    its description, copy its name) in a format of its own, over names drawn from every atom:
    the loss covers the queried name, except where its description's first word occurs twice in
    the list (ambiguous). The last partial piece is padding."""
    ks = jax.random.split(key, 8)
    n = jax.random.randint(ks[0], (rows, 1), entries[0], entries[1] + 1)
    d = jax.random.randint(ks[1], (rows, 1), desc_len[0], desc_len[1] + 1)
    width = d + 8                                      # one line, entry or query
    size = (n + 1) * width
    pos = jnp.arange(max_len)[None, :]
    piece, off = pos // size, pos % size
    line, slot = off // width, off % width             # line == n is the query
    is_query = line == n
    per_piece = lambda k, hi: jax.random.randint(k, (rows, max_len), 0, hi)
    at_piece = lambda x: jnp.take_along_axis(x, piece, axis=1)
    target = jnp.minimum(at_piece(jax.random.uniform(ks[2], (rows, max_len))) * n,
                         n - 1).astype(jnp.int32)
    case = at_piece(per_piece(ks[3], atoms.shape[0]))
    sep = jnp.asarray(seps)[at_piece(per_piece(ks[4], len(seps)))]
    mark_pick = jax.random.randint(ks[5], (rows, max_len, 2), 0, len(marks))
    mark_a, mark_b = (jnp.asarray(marks)[at_piece(mark_pick[..., i])] for i in range(2))
    # Per entry (piece, line) of the list: two atoms and up to desc_len[1] words.
    entry = piece * (entries[1] + 1) + jnp.where(is_query, target, line)
    entry = jnp.clip(entry, 0, max_len - 1)
    draw_atoms = jax.random.randint(ks[6], (rows, max_len, 2), 0, atoms.shape[1])
    atom_ids = [jnp.asarray(atoms)[case, jnp.take_along_axis(draw_atoms[..., i], entry, axis=1)]
                for i in range(2)]
    draw_words = jax.random.randint(ks[7], (rows, max_len, desc_len[1]), 0, len(words))
    word_at = lambda j: jnp.asarray(words)[jnp.take_along_axis(draw_words[..., j], entry, axis=1)]
    # Entry line: mark ␣ a0 sep a1 mark' ␣ w1..wD \n; query line: ? ␣ w1..wD mark' ␣ a0 sep a1 \n.
    name_at = jnp.where(is_query, slot - d - 4, slot - 2)     # 0, 1, 2 within the name
    word_j = jnp.where(is_query, slot - 2, slot - 7)          # 0..D-1 within the description
    in_name = (name_at >= 0) & (name_at < 3)
    in_desc = (word_j >= 0) & (word_j < d)
    second_mark = jnp.where(is_query, slot == d + 2, slot == 5)
    space = (slot == 1) | jnp.where(is_query, slot == d + 3, slot == 6)
    name_tok = jnp.where(name_at == 0, atom_ids[0], jnp.where(name_at == 1, sep, atom_ids[1]))
    word_tok = sum(jnp.where(word_j == j, word_at(j), 0) for j in range(desc_len[1]))
    tokens = jnp.select(
        [(slot == 0) & is_query, slot == 0, second_mark, space, in_name, in_desc, slot == width - 1],
        [query_id, mark_a, mark_b, space_id, name_tok, word_tok, newline_id], pad_id)
    whole = (piece + 1) * size <= max_len
    tokens = jnp.where(whole, tokens, pad_id)
    # A first description word listed twice makes the query ambiguous: no loss on that piece.
    first_word = lambda e: jnp.asarray(words)[jnp.take_along_axis(
        draw_words[..., 0], jnp.clip(piece * (entries[1] + 1) + e, 0, max_len - 1), axis=1)]
    wanted = first_word(target)
    twice = sum(((e < n) & (e != target) & (first_word(e) == wanted)).astype(jnp.int32)
                for e in range(entries[1])) > 0
    return tokens.astype(jnp.int32), whole & is_query & in_name & ~twice


def glossary_ids(tokenizer, tables) -> dict:
    """The id tables `glossary_rows` draws from: every name atom of both splits per casing
    (padded by cycling), the name separators, lowercase letter-run words, and marks."""
    n = int(tables.n_atoms.max())
    atoms = np.stack([np.resize(tables.flat[tables.atom_ref[c, :k, 0]], n)
                      for c, k in enumerate(tables.n_atoms)])
    words = np.array([i for i in range(tokenizer.vocab_size)
                      if (t := tokenizer.decode([i])).isascii() and t.isalpha() and t.islower()
                      and len(t) >= 2], np.int32)
    marks = np.array([tables.single(m) for m in "-*+>:=|#~/@"], np.int32)
    return dict(atoms=atoms, seps=tables.flat[tables.sep_ref[:, 0]], words=words, marks=marks,
                query_id=tables.single("?"), space_id=tables.single(" "),
                newline_id=tables.single("\n"), pad_id=tokenizer.pad_id)


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

    glossary = glossary_ids(tok, env.tables) if any(s == GLOSSARY for s, _ in sources) else None

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
            elif source == GLOSSARY:
                t, m = glossary_rows(k, n, max_len, **glossary)
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
