"""`Scaffold` (one episode's draw on every axis) and `ScaffoldTables` (every axis's text tokenized
once per tokenizer, plus the jittable sampler).

`ScaffoldTables.sample(key, split, vary)` draws a scaffold inside jit: an axis in `vary` draws
uniformly from the split's choices, an axis outside it takes the canonical scaffold (choice 0,
the names `add`, `sub`, ..., the env's own tool order, the env's fault rate).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlx.envs import tokens as token_ops
from rlx.envs.scaffold import axes
from rlx.envs.scaffold.grammar import CompiledGrammar, Grammar, TokenBuffer
from rlx.tokenizer.base import Tokenizer

Array = jax.Array
#: Drawn words per scaffold (the call syntax's four key names).
N_WORDS = len(axes.CALL_SYNTAX.words)


@struct.dataclass
class Scaffold:
    """One episode's scaffold.

    choice [n_grammars, W] int32: the choice row of each grammar (`ScaffoldTables.grammars`);
    name_style [] int32: index into `axes.NAME_STYLES`, -1 for the canonical names;
    name_atoms [n_kinds, 2] int32: the two atoms of each tool kind's name, as indices into
      `ScaffoldTables.atom_text` of the style's casing (train atoms, then held-out atoms);
    words [N_WORDS] int32: the drawn words of the grammars (`grammar.Word`: the call syntax's
      key names), as indices into the lowercase `ScaffoldTables.atom_text`; -1 for the
      canonical words;
    order [n_tools] int32: the listing order, as indices into the env's tools;
    fault_rate [] f32; heldout [len(AXES)] bool: the axes drawn from the held-out split.
    """

    choice: Array
    name_style: Array
    name_atoms: Array
    words: Array
    order: Array
    fault_rate: Array
    heldout: Array


def axes_mask(spec: str | Sequence[str]) -> np.ndarray:
    """bool [len(AXES)]: which axes vary. `spec` is a preset name (`AXIS_PRESETS`), axis names,
    or axis names joined by "+" in one string (e.g. "tool_desc+tool_order", as a config holds)."""
    if isinstance(spec, str):
        if "+" in spec:
            spec = tuple(spec.split("+"))
        elif spec in axes.AXIS_PRESETS:
            spec = axes.AXIS_PRESETS[spec]
        elif spec in axes.AXIS_INDEX:
            spec = (spec,)
        else:
            raise KeyError(f"unknown axes preset {spec!r}; known: {sorted(axes.AXIS_PRESETS)} "
                           f"(or axis names from {axes.AXES}, as a tuple or joined by '+')")
    unknown = [a for a in spec if a not in axes.AXIS_INDEX]
    if unknown:
        raise KeyError(f"unknown scaffold axes {unknown}; known: {list(axes.AXES)}")
    return np.array([a in spec for a in axes.AXES], bool)


class ScaffoldTables:
    """Every axis of one env tokenized once: the compiled grammars, the name atoms, literals.

    `tools`: the env's tool kinds in canonical listing order (REVEAL last);
    `user_prompt`: the task's user-prompt grammar.
    """

    def __init__(self, tokenizer: Tokenizer, tools: Sequence[int], user_prompt: Grammar):
        self.tokenizer = tokenizer
        self.tools = tuple(tools)
        if self.tools[-1] != axes.REVEAL or len(self.tools) < 4:
            raise ValueError(f"a tool env lists >= 3 tools and the reveal tool last, got "
                             f"{[axes.TOOL_KINDS[k] for k in self.tools]}")
        self.buf = TokenBuffer(tokenizer)
        self.grammars: tuple[Grammar, ...] = (*axes.STATIC_GRAMMARS, user_prompt)
        self.row = {g.name: i for i, g in enumerate(self.grammars)}
        self.width = max(g.width for g in self.grammars)
        self.axis_of_row = np.array([next(axes.AXIS_INDEX[a] for a, gs in axes.AXIS_GRAMMARS.items()
                                          if g.name in gs) for g in self.grammars], np.int32)
        # Tool names: per casing, the train atoms then the held-out atoms, padded.
        self.atom_text = tuple(name_atoms(tokenizer, case) for case in axes.NAME_CASES)
        self.n_train_atoms = np.array([len(t) for t, _ in self.atom_text], np.int32)
        self.n_atoms = np.array([len(t) + len(h) for t, h in self.atom_text], np.int32)
        self.atom_ref = np.zeros((len(axes.NAME_CASES), self.n_atoms.max(), 2), np.int32)
        for case, (train, heldout) in enumerate(self.atom_text):
            for i, atom in enumerate(train + heldout):
                self.atom_ref[case, i] = self.buf.add(atom)             # [cases, atoms, 2]
        self.sep_ref = np.array([self.buf.add(s) for s in axes.NAME_SEPARATORS], np.int32)
        # Grammars: their drawn words are lowercase atoms.
        self.compiled = {g.name: CompiledGrammar(g, self.buf, int(self.atom_ref[0, :, 1].max()))
                         for g in self.grammars}
        # Choice tables [n_grammars, N_max, W], padded by repeating row 0, and their sizes.
        n_max = max(max(len(c.train), len(c.heldout)) for c in self.compiled.values())
        self.choices = np.zeros((2, len(self.grammars), n_max, self.width), np.int32)
        self.n_choices = np.zeros((2, len(self.grammars)), np.int32)
        for r, g in enumerate(self.grammars):
            c = self.compiled[g.name]
            for s, table in enumerate((c.train, c.heldout)):
                self.choices[s, r, : len(table), : g.width] = table
                self.n_choices[s, r] = len(table)

        self.canon_ref = np.array([self.buf.add(n) for n in axes.CANONICAL_NAMES], np.int32)
        self.max_name_len = int(max(self.atom_ref[..., 1].max() * 2 + self.sep_ref[:, 1].max(),
                                    self.canon_ref[:, 1].max()))

        self.error_ref = np.array([self.buf.add(m) for m in axes.ERROR_MESSAGES], np.int32)
        self.pad_id, self.eos_id = tokenizer.pad_id, tokenizer.eos_id
        self.digit_ids = np.array([self.single(str(d)) for d in range(10)], np.int32)
        self.minus_id = self.single("-")
        self.digit_value = np.full((tokenizer.vocab_size,), -1, np.int32)
        self.digit_value[self.digit_ids] = np.arange(10)
        self.answer_open = self.single(axes.ANSWER_OPEN)
        self.answer_close = self.single(axes.ANSWER_CLOSE)
        self.stop_token_ids = self._stop_tokens()

    # -- host helpers ----------------------------------------------------------------------------
    def single(self, piece: str) -> int:
        ids = self.tokenizer.encode(piece)
        if len(ids) != 1:
            raise ValueError(f"{piece!r} must be a single token of this tokenizer, got {ids}")
        return ids[0]

    @property
    def flat(self) -> np.ndarray:
        return self.buf.flat

    def _stop_tokens(self) -> tuple[int, ...]:
        """The last token of every call closer, the answer closer and EOS. A closer's last token
        must be one token that occurs nowhere else in a call: the sampler ends the round there."""
        syntax = self.compiled["call_syntax"]
        closers = {syntax.grammar.text(c, "l3") for c in np.concatenate([syntax.train,
                                                                          syntax.heldout])}
        stops = {self.answer_close, self.eos_id}
        for closer in closers:
            stops.add(self.tokenizer.encode(closer)[-1])
        for c in np.concatenate([syntax.train, syntax.heldout]):
            call = "".join(syntax.grammar.text(c, f) for f in ("l0",)) + "x" + "".join(
                syntax.grammar.text(c, f) + "1" for f in ("l1", "l2")) + syntax.grammar.text(c, "l3")
            inside = sorted({self.tokenizer.decode([i]) for i in self.tokenizer.encode(call)[:-1]
                             if i in stops})
            if inside:
                raise ValueError(
                    f"call {call!r}: stop token(s) {inside} occur inside the call. The tool envs "
                    f"end a round at the last token of each call closer and at "
                    f"{axes.ANSWER_CLOSE!r}, so this tokenizer must keep those closers whole "
                    f"(rlx's SentencePiece tokenizer does; a Hugging Face tokenizer needs them "
                    f"added as tokens)")
        return tuple(sorted(stops))

    def max_len(self, grammar: str, field: str) -> int:
        return self.compiled[grammar].max_len[field]

    # -- jittable --------------------------------------------------------------------------------
    def sample(self, key: Array, split: Array, vary: Array) -> Scaffold:
        """Draw a scaffold: each axis in `vary` uniformly over its split's choices, the
        canonical scaffold elsewhere. `split`: 0 (train) or 1 (held out), for every axis or
        per axis ([len(AXES)] int32: e.g. one axis held out, the others at train variants)."""
        n_rows, n_atoms, n_main = len(self.grammars), self.atom_ref.shape[1], len(self.tools) - 1
        bits = jax.random.bits(key, (n_rows + 3 + 2 * n_atoms + n_main,), jnp.uint32)
        b_rows, b_style, b_pos, b_fault = (bits[:n_rows], bits[n_rows], bits[n_rows + 1],
                                           bits[n_rows + 2])
        b_atoms = bits[n_rows + 3: n_rows + 3 + n_atoms]
        b_words = bits[n_rows + 3 + n_atoms: n_rows + 3 + 2 * n_atoms]
        b_order = bits[n_rows + 3 + 2 * n_atoms:]
        split = jnp.broadcast_to(jnp.asarray(split, jnp.int32), (len(axes.AXES),))
        vary = jnp.asarray(vary, bool)
        heldout = vary & (split == 1)

        # Grammar axes: a uniform row of the split's choice table (row 0 of train: canonical).
        row_split = jnp.where(vary[self.axis_of_row], split[self.axis_of_row], 0)
        n = jnp.asarray(self.n_choices)[row_split, jnp.arange(n_rows)]
        row = jnp.where(vary[self.axis_of_row], token_ops.randint(b_rows, 0, n), 0)
        choice = jnp.asarray(self.choices)[row_split, jnp.arange(n_rows), row]

        # Names: one style per episode; 2 distinct atoms per tool kind from the split's atoms
        # of the style's casing.
        style = token_ops.randint(b_style, 0, len(axes.NAME_STYLES))
        atoms = self._draw_atoms(b_atoms, style % len(axes.NAME_CASES),
                                 split[axes.AXIS_INDEX["tool_names"]])
        name_atoms = atoms[: 2 * len(axes.TOOL_KINDS)].reshape(len(axes.TOOL_KINDS), 2)
        name_style = jnp.where(vary[axes.AXIS_INDEX["tool_names"]], style, -1)
        # Drawn words (the call syntax's key names): distinct lowercase atoms of its split.
        syntax = axes.AXIS_INDEX["call_syntax"]
        vary_words = vary[syntax]
        words = self._draw_atoms(b_words, 0, jnp.where(vary_words, split[syntax], 0))[:N_WORDS]
        words = jnp.where(vary_words, words, -1)

        # Order: a permutation of the main tools, even in train, odd held out; the reveal tool
        # at a uniform position.
        perm = jnp.argsort(b_order)
        inversions = (perm[:, None] > perm[None, :]) & (jnp.arange(n_main)[:, None]
                                                          < jnp.arange(n_main)[None, :])
        fix = (inversions.sum() % 2) != split[axes.AXIS_INDEX["tool_order"]]
        perm = jnp.where(fix, perm.at[0].set(perm[1]).at[1].set(perm[0]), perm)
        pos = token_ops.randint(b_pos, 0, n_main + 1)
        i = jnp.arange(n_main + 1)
        order = jnp.where(i < pos, perm[jnp.minimum(i, n_main - 1)],
                          jnp.where(i == pos, n_main, perm[jnp.maximum(i - 1, 0)]))
        order = jnp.where(vary[axes.AXIS_INDEX["tool_order"]], order, i)

        fault_split = split[axes.AXIS_INDEX["fault_rate"]]
        lo, hi = (jnp.where(fault_split == 1, axes.FAULT_RATE_RANGES["heldout"][j],
                            axes.FAULT_RATE_RANGES["train"][j]) for j in (0, 1))
        u = (b_fault >> 8).astype(jnp.float32) / float(1 << 24)
        return Scaffold(choice=choice.astype(jnp.int32), name_style=name_style.astype(jnp.int32),
                        name_atoms=name_atoms.astype(jnp.int32), words=words.astype(jnp.int32),
                        order=order.astype(jnp.int32),
                        fault_rate=(lo + (hi - lo) * u).astype(jnp.float32), heldout=heldout)

    def _draw_atoms(self, bits: Array, case: Array, split: Array) -> Array:
        """Indices of the atoms of `case` in a random order, those of `split` first."""
        n_train = jnp.asarray(self.n_train_atoms)[case]
        lo = jnp.where(split == 1, n_train, 0)
        hi = jnp.where(split == 1, jnp.asarray(self.n_atoms)[case], n_train)
        index = jnp.arange(self.atom_ref.shape[1])
        return jnp.argsort(jnp.where((index >= lo) & (index < hi), bits >> 1,
                                     jnp.uint32(0xFFFFFFFF)))

    def field(self, sc: Scaffold, grammar: str, field: str, xp=jnp) -> tuple[Array, Array]:
        """(offsets, lengths) of a grammar field of this scaffold in `flat`."""
        compiled = self.compiled[grammar]
        words = None
        if compiled.grammar.words:
            drawn = xp.asarray(self.atom_ref)[0, xp.maximum(sc.words, 0)]
            canonical = xp.asarray(compiled.word_ref)
            words = xp.where(sc.words[: len(canonical), None] >= 0,
                             drawn[: len(canonical)], canonical)
        return compiled.segments(sc.choice[self.row[grammar]], field, words, xp=xp)

    def word_text(self, sc: Scaffold) -> list[str] | None:
        """Host: the drawn words of a numpy `Scaffold` (unbatched), None for the canonical."""
        words = np.asarray(sc.words)
        if (words < 0).any():
            return None
        lowercase = self.atom_text[0][0] + self.atom_text[0][1]
        return [lowercase[int(w)] for w in words]

    def name_segments(self, sc: Scaffold, kind, xp=jnp) -> tuple[Array, Array]:
        """(offsets [3], lengths [3]) of tool kind `kind`'s name: atom, separator, atom (or the
        canonical name and two empty segments)."""
        style = xp.maximum(sc.name_style, 0)
        case = style % len(axes.NAME_CASES)
        sep = style // len(axes.NAME_CASES)
        a0, a1 = sc.name_atoms[kind, 0], sc.name_atoms[kind, 1]
        atom, seps, canon = (xp.asarray(self.atom_ref), xp.asarray(self.sep_ref),
                             xp.asarray(self.canon_ref))
        proc = xp.stack([atom[case, a0], seps[sep], atom[case, a1]])          # [3, 2]
        canonical = xp.stack([canon[kind], canon[kind] * 0, canon[kind] * 0])
        ref = xp.where(sc.name_style < 0, canonical, proc)
        return ref[:, 0], ref[:, 1]


def name_atoms(tokenizer: Tokenizer, case: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train, held-out) name atoms in `case` for this tokenizer: train atoms are its pieces
    that `axes.is_train_atom` accepts and that it encodes alone as themselves (at most
    `axes.MAX_TRAIN_ATOMS`, by id); held-out atoms are `axes.HELDOUT_ATOMS` in that casing."""
    train = []
    for i in range(tokenizer.vocab_size):
        piece = tokenizer.decode([i])
        if axes.is_train_atom(piece, case) and tokenizer.encode(piece) == [i]:
            train.append(piece)
            if len(train) == axes.MAX_TRAIN_ATOMS:
                break
    if len(train) < 2 * len(axes.TOOL_KINDS):
        raise ValueError(f"the tokenizer has {len(train)} single-piece {case} letter runs without "
                         f"{axes.HELDOUT_LETTERS!r}; tool names need at least "
                         f"{2 * len(axes.TOOL_KINDS)}")
    return tuple(train), tuple(axes.cased(a, case) for a in axes.HELDOUT_ATOMS)


def scaffold_text_names(tables: ScaffoldTables, sc: Scaffold) -> list[str]:
    """Host: the name of every tool kind (a numpy `Scaffold`, unbatched)."""
    style = int(sc.name_style)
    if style < 0:
        return list(axes.CANONICAL_NAMES)
    sep, case = axes.NAME_STYLES[style]
    train, heldout = tables.atom_text[axes.NAME_CASES.index(case)]
    atoms = train + heldout
    return [atoms[int(a)] + sep + atoms[int(b)] for a, b in np.asarray(sc.name_atoms)]


def axis_labels(tables: ScaffoldTables, sc: Scaffold) -> dict[str, np.ndarray]:
    """Host: a short label per row and axis of a batched numpy `Scaffold` (for success broken
    down by axis): the family of a grammar axis (or its first pool's atom when it has one
    family), the name style, the order's parity, the fault rate to 0.1."""
    choice = np.asarray(sc.choice)
    rows = choice.shape[0]
    out: dict[str, np.ndarray] = {}
    for axis, grammars in axes.AXIS_GRAMMARS.items():
        g = tables.compiled[grammars[0]].grammar
        r = tables.row[g.name]
        if len(g.families) > 1:
            labels = [g.families[int(c[0])][0] for c in choice[:, r]]
        else:
            pool = g.pool_names[0]
            labels = [_atom_label(g.pools[pool][int(c[1])]) for c in choice[:, r]]
        out[axis] = np.asarray(labels, object)
    style = np.asarray(sc.name_style)
    out["tool_names"] = np.asarray(["canonical" if s < 0 else "".join(axes.NAME_STYLES[s])
                                    for s in style], object)
    order = np.asarray(sc.order)
    parity = [(sum(a > b for i, a in enumerate(o[o < o.max()]) for b in o[o < o.max()][i + 1:])
               % 2) for o in order]
    out["tool_order"] = np.asarray(["odd" if p else "even" for p in parity], object)
    out["fault_rate"] = np.asarray([f"{np.floor(f * 10) / 10:.1f}"
                                    for f in np.asarray(sc.fault_rate)], object)
    assert all(len(v) == rows for v in out.values())
    return {a: out[a] for a in axes.AXES}


def _atom_label(atom) -> str:
    text = atom[0] if isinstance(atom, tuple) else atom
    return text.strip() or "(empty)"
