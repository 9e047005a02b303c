"""The episode store: sampled episodes and the experts' judgements of them, in one SQLite file.

Several raters (threads of the rating server, or processes) write at once: the database runs in
WAL mode with a busy timeout, and every write is one short transaction on a connection of its
own, so no judgement is lost and none is half-written. A restart reopens the same file.

    store = EpisodeStore(os.path.join(workdir, "feedback.sqlite"))
    store.add_episodes(records_from_trajectory(traj, tokenizer, run="main", step=0, ...))
    first, second = store.next_pair(rater="ana")          # same task, informative
    store.judge(first.id, second.id, "first", rater="ana", flags={second.id: ("hacking", "...")})
    chosen, rejected = store.preferences()                # ids, ties left out
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

CHOICES = ("first", "second", "tie")
FLAG_KINDS = ("unsafe", "hacking")
MAX_REASON = 500
_RATER = re.compile(r"[A-Za-z0-9_.@-]{1,64}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    step INTEGER NOT NULL,
    task TEXT NOT NULL,            -- episodes of one task share this key (a pair's condition)
    prompt TEXT NOT NULL,
    rounds TEXT NOT NULL,          -- JSON [{"policy": text, "env": text}, ...]
    reward REAL,                   -- NULL: not finite
    components TEXT NOT NULL,      -- JSON {name: value}
    info TEXT NOT NULL,            -- JSON {name: value}: the env's episode info
    scaffold TEXT NOT NULL,        -- JSON {axis: label}: the scaffold variant of every axis
    tokens BLOB NOT NULL,          -- int32 ids of the whole episode
    policy_mask BLOB NOT NULL      -- uint8, 1 where the policy sampled the token
);
CREATE INDEX IF NOT EXISTS episodes_task ON episodes (task);
CREATE TABLE IF NOT EXISTS judgements (
    id INTEGER PRIMARY KEY,
    first INTEGER NOT NULL REFERENCES episodes (id),
    second INTEGER NOT NULL REFERENCES episodes (id),
    choice TEXT NOT NULL CHECK (choice IN ('first', 'second', 'tie')),
    rater TEXT NOT NULL,
    created REAL NOT NULL,
    CHECK (first < second),
    UNIQUE (rater, first, second)
);
CREATE TABLE IF NOT EXISTS flags (
    id INTEGER PRIMARY KEY,
    judgement INTEGER NOT NULL REFERENCES judgements (id),
    episode INTEGER NOT NULL REFERENCES episodes (id),
    kind TEXT NOT NULL CHECK (kind IN ('unsafe', 'hacking')),
    reason TEXT NOT NULL
);
"""


@dataclasses.dataclass(frozen=True)
class EpisodeRecord:
    """One stored episode. `rounds` alternate what the policy wrote and what the env answered."""

    run: str
    step: int
    task: str
    prompt: str
    rounds: list[dict[str, str]]
    reward: float
    components: dict[str, float]
    info: dict[str, float]
    tokens: np.ndarray
    policy_mask: np.ndarray
    scaffold: dict[str, str] = dataclasses.field(default_factory=dict)
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """What the rating page shows (no token arrays)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("tokens", "policy_mask")}


@dataclasses.dataclass(frozen=True)
class Judgement:
    id: int
    first: int
    second: int
    choice: str
    rater: str
    created: float
    flags: tuple[tuple[int, str, str], ...]     # (episode, kind, reason)


class FeedbackError(ValueError):
    """Bad input to the store: the message names the field and what is allowed."""


class UnknownEpisode(FeedbackError):
    """An episode id that is not in the store."""


class AlreadyJudged(FeedbackError):
    """A rater judging a pair they judged before."""


class EpisodeStore:
    """Episodes and judgements in the SQLite file at `path` (created if missing)."""

    def __init__(self, path: str, timeout: float = 30.0):
        self.path, self.timeout = path, timeout
        db = sqlite3.connect(path, timeout=timeout)
        try:
            db.execute("PRAGMA journal_mode=WAL")     # readers never block the one writer
            db.executescript(_SCHEMA)
        finally:
            db.close()

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One connection per operation, committed on success and rolled back on error. A write
        takes the write lock at once (`BEGIN IMMEDIATE`: its checks and inserts see one state);
        a read takes a snapshot and never waits for a writer."""
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # -- episodes -------------------------------------------------------------------------------
    def add_episodes(self, records: Sequence[EpisodeRecord]) -> list[int]:
        """Stores `records` (their `id` is ignored) in one transaction; returns the new ids. A
        non-finite reward is stored as NULL and read back as NaN."""
        with self._connect(write=True) as db:
            return [db.execute(
                "INSERT INTO episodes (run, step, task, prompt, rounds, reward, components, "
                "info, scaffold, tokens, policy_mask) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r.run, int(r.step), r.task, r.prompt, json.dumps(r.rounds),
                 float(r.reward) if np.isfinite(r.reward) else None,
                 json.dumps(r.components), json.dumps(r.info), json.dumps(r.scaffold),
                 np.asarray(r.tokens, np.int32).tobytes(),
                 np.asarray(r.policy_mask, np.uint8).tobytes())).lastrowid for r in records]

    def episode(self, episode_id: int) -> EpisodeRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM episodes WHERE id = ?", (episode_id,)).fetchone()
        if row is None:
            raise UnknownEpisode(f"episode {episode_id} is not in the store")
        return _record(row)

    def episodes(self, run: str | None = None) -> list[EpisodeRecord]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM episodes WHERE ? IS NULL OR run = ? ORDER BY id",
                              (run, run)).fetchall()
        return [_record(r) for r in rows]

    def count(self) -> dict[str, int]:
        with self._connect() as db:
            return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                    for t in ("episodes", "judgements", "flags")}

    # -- pairs and judgements -------------------------------------------------------------------
    def next_pair(self, rater: str, seed: int | None = None
                  ) -> tuple[EpisodeRecord, EpisodeRecord] | None:
        """Two episodes of one task that `rater` has not judged yet, where a judgement is
        informative: episodes that behaved differently (different tokens), those with different
        rewards first; random among equals (`seed` fixes the draw), in a random order (so
        neither side is always the older episode). None when none is left."""
        _check_rater(rater)
        with self._connect() as db:
            rows = db.execute(
                "SELECT a.id, b.id, a.reward != b.reward FROM episodes a JOIN episodes b "
                "ON a.task = b.task AND a.id < b.id AND a.tokens != b.tokens "
                "WHERE NOT EXISTS (SELECT 1 FROM judgements j WHERE j.rater = ? "
                "AND j.first = a.id AND j.second = b.id) ORDER BY a.id, b.id",
                (rater,)).fetchall()
        if not rows:
            return None
        differ = [r for r in rows if r[2]] or rows
        rng = np.random.default_rng(seed)
        pair = [self.episode(i) for i in differ[rng.integers(len(differ))][:2]]
        return (pair[1], pair[0]) if rng.random() < 0.5 else (pair[0], pair[1])

    def judge(self, first: int, second: int, choice: str, rater: str,
              flags: Mapping[int, tuple[str, str]] | None = None) -> int:
        """Records that `rater` prefers `first`, `second` or neither (`choice`: 'first', 'second'
        or 'tie') of two episodes of one task, with optional flags {episode: (kind, reason)}.
        Everything is checked before anything is written; returns the judgement's id."""
        _check_rater(rater)
        if choice not in CHOICES:
            raise FeedbackError(f"choice={choice!r}; allowed: {', '.join(CHOICES)}")
        first, second = _episode_id("first", first), _episode_id("second", second)
        if first == second:
            raise FeedbackError(f"first and second are the same episode ({first})")
        flags = dict(flags or {})
        for episode, (kind, reason) in flags.items():
            if episode not in (first, second):
                raise FeedbackError(f"flag on episode {episode}: only the judged episodes "
                                    f"{first} and {second} can be flagged")
            if kind not in FLAG_KINDS:
                raise FeedbackError(f"flag kind={kind!r}; allowed: {', '.join(FLAG_KINDS)}")
            if not isinstance(reason, str) or not 0 < len(reason.strip()) <= MAX_REASON:
                raise FeedbackError(f"flag reason must be 1-{MAX_REASON} characters of text")
        if first > second:     # stored in id order
            first, second = second, first
            choice = {"first": "second", "second": "first"}.get(choice, choice)
        with self._connect(write=True) as db:
            tasks = db.execute("SELECT id, task FROM episodes WHERE id IN (?, ?)",
                               (first, second)).fetchall()
            found = {r[0]: r[1] for r in tasks}
            missing = [i for i in (first, second) if i not in found]
            if missing:
                raise UnknownEpisode(f"episode {missing[0]} is not in the store")
            if found[first] != found[second]:
                raise FeedbackError(f"episodes {first} and {second} are of different tasks "
                                    f"({found[first]!r}, {found[second]!r}): only episodes of "
                                    f"one task are compared")
            try:
                jid = db.execute("INSERT INTO judgements (first, second, choice, rater, created) "
                                 "VALUES (?, ?, ?, ?, ?)",
                                 (first, second, choice, rater, time.time())).lastrowid
            except sqlite3.IntegrityError as e:
                raise AlreadyJudged(f"rater {rater!r} has already judged episodes {first} and "
                                    f"{second}") from e
            db.executemany("INSERT INTO flags (judgement, episode, kind, reason) "
                           "VALUES (?, ?, ?, ?)",
                           [(jid, e, k, r.strip()) for e, (k, r) in flags.items()])
        return jid

    def judgements(self, rater: str | None = None) -> list[Judgement]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM judgements WHERE ? IS NULL OR rater = ? "
                              "ORDER BY id", (rater, rater)).fetchall()
            flags = db.execute("SELECT judgement, episode, kind, reason FROM flags "
                               "ORDER BY id").fetchall()
        by_judgement: dict[int, list] = {}
        for f in flags:
            by_judgement.setdefault(f[0], []).append((f[1], f[2], f[3]))
        return [Judgement(r["id"], r["first"], r["second"], r["choice"], r["rater"],
                          r["created"], tuple(by_judgement.get(r["id"], ())))
                for r in rows]

    def preferences(self) -> tuple[np.ndarray, np.ndarray]:
        """(chosen ids, rejected ids) of every judgement that is not a tie."""
        pairs = [(j.first, j.second) if j.choice == "first" else (j.second, j.first)
                 for j in self.judgements() if j.choice != "tie"]
        arr = np.array(pairs, np.int64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]

    def flagged(self) -> dict[int, list[tuple[str, str]]]:
        """{episode: [(kind, reason), ...]} over every judgement."""
        out: dict[int, list[tuple[str, str]]] = {}
        for j in self.judgements():
            for episode, kind, reason in j.flags:
                out.setdefault(episode, []).append((kind, reason))
        return out


def _record(row: sqlite3.Row) -> EpisodeRecord:
    return EpisodeRecord(
        id=row["id"], run=row["run"], step=row["step"], task=row["task"], prompt=row["prompt"],
        rounds=json.loads(row["rounds"]),
        reward=np.nan if row["reward"] is None else row["reward"],
        components=json.loads(row["components"]), info=json.loads(row["info"]),
        scaffold=json.loads(row["scaffold"]),
        tokens=np.frombuffer(row["tokens"], np.int32),
        policy_mask=np.frombuffer(row["policy_mask"], np.uint8).astype(bool))


def _check_rater(rater: Any) -> None:
    if not isinstance(rater, str) or not _RATER.fullmatch(rater):
        raise FeedbackError(f"rater={rater!r}: 1-64 characters of letters, digits and ._@-")


def _episode_id(field: str, value: Any) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
            or not 1 <= value <= 2**63 - 1):
        raise FeedbackError(f"{field}={value!r} must be an episode id (an integer in "
                            f"1..2**63-1)")
    return int(value)


def records_from_trajectory(traj, tokenizer, *, run: str, step: int, total, components,
                            tasks: Sequence[str] | None = None,
                            scaffold: Mapping[str, Sequence[str]] | None = None
                            ) -> list[EpisodeRecord]:
    """One `EpisodeRecord` per row of a `Trajectory` (host arrays or device arrays): the prompt,
    then rounds split where the policy mask changes (what the policy wrote, what the env
    answered), the composed reward `total` [B] and its `components` {name: [B]}. `tasks` keys the
    rows' tasks (default: run/step/group, the rows a GRPO group samples from one task);
    `scaffold` {axis: [B] labels} names each row's scaffold variants
    (`rlx.train.evaluation.scaffold_labels`)."""
    tokens, mask = np.asarray(traj.tokens), np.asarray(traj.policy_mask)
    prompt_len, length = np.asarray(traj.prompt_length), np.asarray(traj.length)
    group = np.asarray(traj.group)
    total = np.asarray(total)
    comps = {k: np.asarray(v) for k, v in components.items()}
    info = {k: np.asarray(v) for k, v in traj.info.items() if np.ndim(v) == 1}
    out = []
    for i in range(tokens.shape[0]):
        ids, pol = tokens[i, : length[i]], mask[i, : length[i]]
        start = int(prompt_len[i])
        cuts = [start, *(np.flatnonzero(np.diff(pol[start:].astype(np.int8))) + start + 1),
                len(ids)]
        rounds: list[dict[str, str]] = []
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            if a >= b:        # an episode with nothing after its prompt
                continue
            text = tokenizer.decode(ids[a:b].tolist())
            if pol[a] or not rounds:
                rounds.append({"policy": "", "env": ""})
            rounds[-1]["policy" if pol[a] else "env"] += text
        out.append(EpisodeRecord(
            run=run, step=int(step),
            task=tasks[i] if tasks is not None else f"{run}/{int(step)}/{int(group[i])}",
            prompt=tokenizer.decode(ids[: prompt_len[i]].tolist()), rounds=rounds,
            reward=float(total[i]), components={k: float(v[i]) for k, v in comps.items()},
            info={k: float(v[i]) for k, v in info.items()},
            scaffold={k: str(v[i]) for k, v in (scaffold or {}).items()},
            tokens=ids.astype(np.int32),
            policy_mask=pol.astype(bool)))
    return out
