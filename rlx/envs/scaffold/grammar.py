"""A small template grammar: the text of one scaffold axis as families of templates over atom
pools, enumerated into train and held-out choices, rendered as strings on the host and as token
segments inside jit from the same tables.

A `Grammar` has named `pools` of atoms (an atom is a string or a tuple of strings, e.g. an
opener/closer pair) and `families`, each a dict of field templates. A template is a tuple of
parts: literal strings, `Slot(pool, part)`s and `Word(index)`s. A *choice* is one row of ints
`(family, index into each pool)`; a slot renders the chosen atom of its pool (its `part` for
tuple atoms). Pools a family does not use stay at index 0, so two choices never render the
same text. A word is drawn per episode, not per choice: one of the name atoms of the axis's
split (`ScaffoldTables.sample`), or the canonical `Grammar.words[index]` when the axis does not
vary; it is what a policy must copy from its context (a key name in the call example).

Split rule (documented per grammar, checked by the tests):
  * drawn words: disjoint atoms, those of the tool names (held-out words contain a letter of
    `axes.HELDOUT_LETTERS`, train words never do);
  * choices: disjoint combinations. A choice is held out iff
    `(family + sum of the used indices) % combo_mod == combo_mod - 1` and each of its atoms
    occurs in some train choice, so a held-out combination is new and its parts are not.
Choice row 0 of the train table is the canonical scaffold (family 0, every index 0).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

Atom = str | tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Slot:
    """A template part that renders the chosen atom of `pool` (element `part` of a tuple atom)."""

    pool: str
    part: int = 0


@dataclasses.dataclass(frozen=True)
class Word:
    """A template part that renders the episode's drawn word `index`: a name atom of the axis's
    split, drawn per episode (`ScaffoldTables.sample`), or the grammar's canonical word
    `Grammar.words[index]` when the axis does not vary."""

    index: int


Part = str | Slot | Word


@dataclasses.dataclass(frozen=True)
class Grammar:
    """The text of one axis. `fields` names what every family renders (e.g. an opener)."""

    name: str
    fields: tuple[str, ...]
    families: tuple[tuple[str, Mapping[str, tuple[Part, ...]]], ...]
    pools: Mapping[str, tuple[Atom, ...]] = dataclasses.field(default_factory=dict)
    combo_mod: int = 4
    words: tuple[str, ...] = ()

    def __post_init__(self):
        for fam, templates in self.families:
            if set(templates) != set(self.fields):
                raise ValueError(f"grammar {self.name} family {fam}: fields {sorted(templates)} "
                                 f"!= {sorted(self.fields)}")
            for parts in templates.values():
                for p in parts:
                    if isinstance(p, Slot) and p.pool not in self.pools:
                        raise ValueError(f"grammar {self.name} family {fam}: unknown pool "
                                         f"{p.pool!r}; pools: {sorted(self.pools)}")
                    if isinstance(p, Word) and not 0 <= p.index < len(self.words):
                        raise ValueError(f"grammar {self.name} family {fam}: Word({p.index}) "
                                         f"has no canonical word; words: {self.words}")

    @property
    def pool_names(self) -> tuple[str, ...]:
        return tuple(self.pools)

    @property
    def width(self) -> int:
        """Ints in a choice row: the family, then one index per pool."""
        return 1 + len(self.pools)

    def used_pools(self, family: int) -> tuple[str, ...]:
        templates = self.families[family][1]
        used = {p.pool for parts in templates.values() for p in parts if isinstance(p, Slot)}
        return tuple(p for p in self.pools if p in used)

    def _atoms(self, choice) -> set[tuple[str, int]]:
        return {(p, int(choice[1 + self.pool_names.index(p)]))
                for p in self.used_pools(int(choice[0]))}

    def _rule(self, choice) -> bool:
        """The first-pass split rule of one choice row (see `choices`)."""
        fam = int(choice[0])
        idx = {p: int(choice[1 + i]) for i, p in enumerate(self.pools)}
        return (fam + sum(idx[p] for p in self.used_pools(fam))) % self.combo_mod == self.combo_mod - 1

    def choices(self) -> tuple[np.ndarray, np.ndarray]:
        """Every distinct choice, split: (train [N, width], heldout [M, width]) int32.

        The combinations with index `combo_mod - 1` modulo `combo_mod` are held out, except any
        that has an atom no train choice shows (which stay in train), so a held-out combination
        is new while its parts are not."""
        rows = []
        for fam in range(len(self.families)):
            used = self.used_pools(fam)
            ranges = [range(len(self.pools[p])) if p in used else range(1) for p in self.pools]
            rows += [(fam, *idx) for idx in itertools.product(*ranges)]
        held = {r for r in rows if self._rule(r)}
        while True:
            seen = set().union(*(self._atoms(r) for r in rows if r not in held))
            keep = {r for r in held if self._atoms(r) <= seen}
            if keep == held:
                break
            held = keep
        train = np.asarray([r for r in rows if r not in held], np.int32).reshape(-1, self.width)
        heldout = np.asarray([r for r in rows if r in held], np.int32).reshape(-1, self.width)
        if len(train) == 0 or len(heldout) == 0 or train[0].any():
            raise ValueError(f"grammar {self.name}: needs train and held-out choices and a "
                             f"canonical train choice 0")
        return train, heldout

    def atom(self, choice, slot: Slot) -> str:
        a = self.pools[slot.pool][int(choice[1 + self.pool_names.index(slot.pool)])]
        return a[slot.part] if isinstance(a, tuple) else a

    def text(self, choice, field: str, words: Sequence[str] | None = None) -> str:
        """`field` of `choice` as a string (the host renderer), with the drawn `words` (the
        canonical `self.words` when None)."""
        words = self.words if words is None else words
        return "".join(p if isinstance(p, str) else words[p.index] if isinstance(p, Word)
                       else self.atom(choice, p) for p in self.families[int(choice[0])][1][field])

    def strings(self) -> list[str]:
        """Every literal, atom and canonical word (what a tokenizer corpus must cover)."""
        out = [p for _, t in self.families for parts in t.values() for p in parts
               if isinstance(p, str)]
        for atoms in self.pools.values():
            for a in atoms:
                out.extend(a if isinstance(a, tuple) else (a,))
        return out + list(self.words)


class CompiledGrammar:
    """A grammar's templates as int tables over a shared token buffer (`TokenBuffer`).

    `segments(choice, field, words)` -> (offsets [P], lengths [P]) of the field's parts in the
    buffer: a constant number of gathers, so it jits and vmaps. `word_len` bounds the token
    length of a drawn word (for `max_len`).
    """

    def __init__(self, grammar: Grammar, buf: TokenBuffer, word_len: int = 1):
        self.grammar = grammar
        self.train, self.heldout = grammar.choices()
        self.field_index = {f: i for i, f in enumerate(grammar.fields)}
        n_fam, n_fields = len(grammar.families), len(grammar.fields)
        width = max(len(parts) for _, t in grammar.families for parts in t.values())
        # Every slot part (pool, element) gets a row of atom offsets/lengths.
        slot_keys = sorted({(p.pool, p.part) for _, t in grammar.families for parts in t.values()
                            for p in parts if isinstance(p, Slot)})
        self.slot_row = {k: i for i, k in enumerate(slot_keys)}
        n_atoms = max([len(a) for a in grammar.pools.values()] + [1])
        self.atom_off = np.zeros((max(len(slot_keys), 1), n_atoms), np.int32)
        self.atom_len = np.zeros_like(self.atom_off)
        for (pool, part), r in self.slot_row.items():
            for i, a in enumerate(grammar.pools[pool]):
                self.atom_off[r, i], self.atom_len[r, i] = buf.add(
                    a[part] if isinstance(a, tuple) else a)
        self.lit_off = np.zeros((n_fam, n_fields, width), np.int32)
        self.lit_len = np.zeros_like(self.lit_off)
        self.slot = np.full((n_fam, n_fields, width), -1, np.int32)       # slot row or -1
        self.slot_pool = np.zeros((n_fam, n_fields, width), np.int32)     # pool index in choice
        self.word = np.full((n_fam, n_fields, width), -1, np.int32)      # word index or -1
        #: (offset, length) of each canonical word [n_words, 2].
        self.word_ref = np.array([buf.add(w) for w in grammar.words] or [(0, 0)], np.int32)
        for f, (_, templates) in enumerate(grammar.families):
            for field, parts in templates.items():
                j = self.field_index[field]
                for k, p in enumerate(parts):
                    if isinstance(p, str):
                        self.lit_off[f, j, k], self.lit_len[f, j, k] = buf.add(p)
                    elif isinstance(p, Word):
                        self.word[f, j, k] = p.index
                    else:
                        self.slot[f, j, k] = self.slot_row[(p.pool, p.part)]
                        self.slot_pool[f, j, k] = 1 + grammar.pool_names.index(p.pool)
        every = np.concatenate([self.train, self.heldout])
        longest = max(word_len, int(self.word_ref[:, 1].max()))
        self.max_len = {}
        for f in grammar.fields:
            lengths = self.segments(every, f, xp=np)[1]
            drawn = self.word[every[:, 0], self.field_index[f]] >= 0
            self.max_len[f] = int(np.where(drawn, longest, lengths).sum(-1).max())

    def segments(self, choice, field: str, words=None, xp=None):
        """(offsets [..., P], lengths [..., P]) of `field` for `choice` (int [..., width]) with
        the drawn words `words` ((offset, length) [..., n_words, 2]; the canonical words when
        None); jittable and batched over leading dimensions (`xp=np` on the host)."""
        xp = xp or jnp
        j = self.field_index[field]
        fam = choice[..., 0]
        slot = xp.asarray(self.slot)[fam, j]                                 # [..., P]
        is_slot = slot >= 0
        pool_idx = xp.take_along_axis(choice, xp.asarray(self.slot_pool)[fam, j], axis=-1)
        pool_idx = xp.where(is_slot, pool_idx, 0)
        row = xp.maximum(slot, 0)
        off = xp.where(is_slot, xp.asarray(self.atom_off)[row, pool_idx],
                       xp.asarray(self.lit_off)[fam, j])
        n = xp.where(is_slot, xp.asarray(self.atom_len)[row, pool_idx],
                     xp.asarray(self.lit_len)[fam, j])
        word = xp.asarray(self.word)[fam, j]
        refs = xp.broadcast_to(xp.asarray(self.word_ref if words is None else words),
                               (*fam.shape, len(self.word_ref), 2))
        ref = xp.take_along_axis(refs, xp.maximum(word, 0)[..., None], axis=-2)  # [..., P, 2]
        off = xp.where(word >= 0, ref[..., 0], off)
        n = xp.where(word >= 0, ref[..., 1], n)
        return off, n


class TokenBuffer:
    """Strings tokenized once into one flat id buffer; `add` returns (offset, length)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._ids: list[int] = []
        self._seen: dict[str, tuple[int, int]] = {}

    def add(self, text: str) -> tuple[int, int]:
        if text not in self._seen:
            ids = self.tokenizer.encode(text)
            self._seen[text] = (len(self._ids), len(ids))
            self._ids.extend(ids)
        return self._seen[text]

    @property
    def flat(self) -> np.ndarray:
        return np.asarray(self._ids or [self.tokenizer.pad_id], np.int32)
