"""`QAEnv` ("qa"): a jittable single-round env over a table of GSM8K-format questions.

Rows come from an iterable of `question` / `answer` examples (the answer ends in `#### N`): a
prepared TFDS dataset read with `tfds.data_source` (`data_dir`, `dataset`, `dataset_config`,
`train_split` / `heldout_split`), JSON-lines files with `question` and `answer` fields
(`train_file`, `heldout_file`), or given pairs (`examples`, `heldout_examples`). Everything is
tokenized once on the host into padded tables; `reset` and `step` only index them, so they jit,
vmap and shard like the tool envs.

    env, params = rlx.envs.make("qa", data_dir="/data/tfds", tokenizer=tok, split="heldout")
    obs, state = env.reset(key, params)           # a random row of the heldout split
    obs, state, reward, done, info = env.step(key, state, action, params)   # done is True

Prompt: with a tokenizer that has a chat template (`rlx.tokenizer.hf.HFTokenizer`), the system
text and the question rendered by the model's own template with `add_generation_prompt=True`
(what `transformers`' `apply_chat_template` gives), so RL prompts match what the model saw in
post-training; otherwise the scaffold-free text of `rlx.data.qa.qa_prompts` (ChatML markers).

Answer convention: the policy's last `<answer>N</answer>` in its round. `<answer>` and
`</answer>` are matched as the token sequences the tokenizer gives them (one id each for rlx's
SentencePiece tokenizer, several for e.g. Qwen's), with or without a leading space. N is an
integer in decimal digits, optionally negative, at most 9 digits, possibly split over several
number tokens (Llama-3 groups digits by 3, GPT-2 BPE keeps ' 42' whole), single commas between
digit tokens allowed ('1,200'), one whitespace token allowed after `<answer>` and before
`</answer>` when the tokenizer encodes ' </answer>' with it. Anything else
(decimals, words, no closing tag) is an unanswered or invalid answer, never an exception.

Stop tokens: the tokenizer's EOS, plus `</answer>` when it is a single token (then the round
ends right after the answer); when it is several tokens the round ends at EOS (for chat models
the end-of-turn token, e.g. Qwen's `<|im_end|>`) or at `max_new_tokens`.

Params are the `ToolEnvParams` that `rlx.envs.make` builds for every env; this env reads only
`split` (0 "train": rows of `train_split`; 1 "heldout": rows of `heldout_split`), so the
trainer's evaluation on "train" / "heldout" measures fit vs. generalization. Rows whose reference
is not an integer are dropped at build time (`num_dropped`), so every task is winnable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlx.envs import tokens as T
from rlx.envs import tool_env
from rlx.envs.base import Chunk, Env
from rlx.envs.qa_text import SYSTEM, as_text, parse_answer, solution_text
from rlx.envs.scaffold.axes import chat_markers
from rlx.tokenizer import Tokenizer, load_default

Array = jax.Array

#: Tokens read after `<answer>` for the number (space, sign, digit and comma tokens).
NUM_WINDOW = 16
_DIGITS = re.compile(r"( ?)([0-9]{1,9})")


@struct.dataclass
class QAEnvTask:
    """answer [] int32 (the reference); valid [] bool (always True: invalid rows are dropped; the
    field keeps the `task.valid` contract of `answer_match`); row [] int32 (index into the
    env's table, `env.rows[row]` is the (question, answer) text)."""

    answer: Array
    valid: Array
    row: Array


@struct.dataclass
class QAEnvState:
    task: QAEnvTask
    scaffold: Array       # no scaffold axes here: always 0 (kept for `rlx.rollout.play`)
    done: Array
    stats: dict[str, Array]


def load_examples(data_dir: str, dataset: str, split: str,
                  config: str = "") -> list[tuple[str, str]]:
    """(question, answer) pairs of a prepared TFDS dataset (array_record, read with
    `data_source`, no TensorFlow): `gsm8k`, or a local `rlx_qa_local` build.

    Needs no builder code from `rlx.data`: TFDS reads a prepared dataset that no registered
    builder config describes from its own files, e.g. an `rlx_qa_local` build
    (`rlx.data.qa.RlxQaLocal`) under a config name of its own.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(dataset, config=config or None, data_dir=data_dir)
        src = builder.as_data_source(split)
    except Exception as e:
        raise ValueError(
            f"env.dataset={dataset!r} (config {config!r}) split {split!r} cannot be read from "
            f"env.data_dir={data_dir!r} ({str(e).splitlines()[0]}). Prepare it there as "
            f"array_record, e.g. "
            f"`tfds build {dataset} --data_dir={data_dir} --file_format=array_record`") from e
    return [(as_text(r["question"]), as_text(r["answer"]))
            for r in (src[i] for i in range(len(src)))]


def load_jsonl(path: str) -> list[tuple[str, str]]:
    """(question, answer) pairs of a JSON-lines file: one object per line with text fields
    `question` and `answer` (other fields are ignored, blank lines skipped). A line that is not
    such an object is an error naming the file and the line."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON object ({e.msg})") from e
            if not (isinstance(row, dict) and isinstance(row.get("question"), str)
                    and isinstance(row.get("answer"), str)):
                got = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise ValueError(f"{path}:{n}: needs text fields 'question' and 'answer'; "
                                 f"got {got}")
            pairs.append((row["question"], row["answer"]))
    if not pairs:
        raise ValueError(f"{path} holds no examples (one JSON object per line with 'question' "
                         f"and 'answer')")
    return pairs


class QAEnv(Env):
    """One round: prompt -> the policy's answer -> done. See the module docstring.

    Args:
      tokenizer: any rlx `Tokenizer` (default: `load_default()`).
      data_dir, dataset, dataset_config, train_split, heldout_split: the TFDS source.
      train_file, heldout_file: JSON-lines files instead (`load_jsonl`).
      examples, heldout_examples: (question, answer) pairs instead of a TFDS source.
      max_prompt_len: padded prompt size; 0 = the longest prompt. A prompt longer than a given
        size is an error naming the row.
      max_oracle_len: padded size of the oracle's round; 0 = the longest.
      max_rows: keep at most this many rows per split (0 = all), in dataset order.
      system: the system text (default `rlx.envs.qa_text.SYSTEM`, which asks for
        <answer>N</answer>).
      max_steps: accepted because `rlx.envs.make` passes it to every env; an episode is one
        round whatever its value.
    """

    name = "qa"

    def __init__(self, tokenizer: Tokenizer | None = None, data_dir: str = "",
                 dataset: str = "gsm8k", dataset_config: str = "", train_split: str = "train",
                 heldout_split: str = "test", train_file: str = "", heldout_file: str = "",
                 examples: Sequence[tuple[str, str]] | None = None,
                 heldout_examples: Sequence[tuple[str, str]] | None = None,
                 max_prompt_len: int = 0, max_oracle_len: int = 0, max_rows: int = 0,
                 system: str = "", max_steps: int = 1):
        self.tokenizer = tok = tokenizer or load_default()
        self.system = system or SYSTEM
        self.max_steps = 1
        del max_steps
        sources = [name for name, given in (("examples", examples is not None),
                                            ("env.data_dir", data_dir),
                                            ("env.train_file", train_file or heldout_file))
                   if given]
        if len(sources) > 1:
            raise ValueError(f"the qa env takes one data source; given {' and '.join(sources)}, "
                             f"not both")
        if examples is not None:
            splits = [list(examples), list(heldout_examples or ())]
        elif data_dir:
            splits = [load_examples(data_dir, dataset, s, dataset_config)
                      for s in (train_split, heldout_split)]
        elif train_file and heldout_file:
            splits = [load_jsonl(train_file), load_jsonl(heldout_file)]
        else:
            raise ValueError("the qa env needs its data: env.data_dir (a TFDS data dir holding "
                             "env.dataset), env.train_file and env.heldout_file (JSON lines with "
                             "'question' and 'answer'), or examples=((question, answer), ...)")

        self.rows: list[tuple[str, str]] = []
        answers, starts, counts = [], [], []
        self.num_dropped = 0
        for name, rows in zip(("train", "heldout"), splits, strict=True):
            rows = [(as_text(q), as_text(a)) for q, a in rows]
            starts.append(len(self.rows))
            kept = 0
            for q, a in rows:
                if max_rows and kept >= max_rows:
                    break
                value, ok = parse_answer(a)
                if not ok:
                    self.num_dropped += 1
                    continue
                self.rows.append((q, a))
                answers.append(value)
                kept += 1
            if not kept:
                raise ValueError(f"the qa env's {name} split has no row with an integer answer "
                                 f"(of {len(rows)} rows)")
            counts.append(kept)
        self.split_start = jnp.asarray(starts, jnp.int32)
        self.split_count = jnp.asarray(counts, jnp.int32)
        self.answers = jnp.asarray(answers, jnp.int32)

        prompts = [tok.encode(self.prompt_text(q)) for q, _ in self.rows]
        longest = max(map(len, prompts))
        self.max_prompt_len = int(max_prompt_len) or longest
        for i, p in enumerate(prompts):
            if len(p) > self.max_prompt_len:
                raise ValueError(f"qa row {i}: prompt has {len(p)} tokens > env.max_prompt_len="
                                 f"{self.max_prompt_len} (the longest has {longest}; 0 = fit)")
        self.prompt_tokens, self.prompt_lens = _table(prompts, self.max_prompt_len, tok.pad_id)
        self.max_obs_len = 1   # the episode ends after one round: observations are empty

        self._open = _patterns(tok, ("<answer>", " <answer>"))
        self._close = _patterns(tok, ("</answer>", " </answer>"))
        oracle = [self.oracle_ids(a, v) for (_, a), v in zip(self.rows, answers, strict=True)]
        longest = max(map(len, oracle))
        self.max_oracle_len = int(max_oracle_len) or longest
        if longest > self.max_oracle_len:
            raise ValueError(f"an oracle answer has {longest} tokens > env.max_oracle_len="
                             f"{self.max_oracle_len} (0 = fit)")
        self.oracle_tokens, self.oracle_lens = _table(oracle, self.max_oracle_len, tok.pad_id)
        self._num = _number_tables(tok)

        stops = {tok.eos_id}
        close = tok.encode("</answer>")
        self.close_is_single = len(close) == 1
        if self.close_is_single:
            stops.add(close[0])
        self.stop_token_ids = tuple(sorted(stops))

    # -- host-side text (also the reference for tests) -------------------------------------------
    def prompt_text(self, question: str) -> str:
        """The prompt as text: the model's chat template if the tokenizer has one, else the
        ChatML-marked text of `rlx.data.qa.qa_prompts`."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(
                [{"role": "system", "content": self.system},
                 {"role": "user", "content": question}], add_generation_prompt=True)
        chat = chat_markers(0)
        return (chat["sys_start"] + self.system + chat["sys_end"] + chat["user_start"] + question
                + chat["user_end"] + chat["asst_start"])

    def oracle_ids(self, answer: str, value: int) -> list[int]:
        """The oracle's round: the worked solution, `<answer>N</answer>` and EOS. The tags are
        encoded on their own, so the round contains exactly the token patterns `step` reads."""
        tok = self.tokenizer
        sol = solution_text(answer)
        return ((tok.encode(sol + "\n") if sol else []) + tok.encode("<answer>")
                + tok.encode(str(value)) + tok.encode("</answer>") + [tok.eos_id])

    # -- Env contract ----------------------------------------------------------------------------
    @property
    def default_params(self) -> tool_env.ToolEnvParams:
        return tool_env.default_params()

    def reset_env(self, key: Array, params: tool_env.ToolEnvParams) -> tuple[Chunk, QAEnvState]:
        split = jnp.clip(params.split, 0, 1)
        n = self.split_count[split]
        bits = jax.random.bits(key, (), jnp.uint32)
        row = self.split_start[split] + T.randint(bits, 0, n)
        return self.reset_to(row, params)

    def reset_to(self, row: Array, params: Any = None) -> tuple[Chunk, QAEnvState]:
        """Deterministic reset to table row `row` (an index into `self.rows`)."""
        row = jnp.asarray(row, jnp.int32)
        task = QAEnvTask(answer=self.answers[row], valid=jnp.ones((), bool), row=row)
        zero_i, zero_b = jnp.zeros((), jnp.int32), jnp.zeros((), bool)
        stats = {k: (zero_b if k in ("answered", "answer_valid", "correct",
                                     "used_forbidden_tool", "heldout_scaffold") else zero_i)
                 for k in tool_env.INFO_KEYS}
        state = QAEnvState(task=task, scaffold=zero_i, done=zero_b, stats=stats)
        return Chunk(self.prompt_tokens[row], self.prompt_lens[row]), state

    def task(self, state: QAEnvState) -> QAEnvTask:
        return state.task

    def step_env(self, key: Array, state: QAEnvState, action: Chunk, params: Any):
        p = self.parse(action)
        task = state.task
        correct = p["answer_ok"] & (p["answer"] == task.answer) & task.valid
        st = state.stats
        stats = dict(st)
        stats.update(turns=st["turns"] + 1, answered=st["answered"] | p["is_answer"],
                     answer_valid=st["answer_valid"] | p["answer_ok"],
                     correct=st["correct"] | correct)
        stats = {k: jnp.asarray(v).astype(st[k].dtype) for k, v in stats.items()}
        new = state.replace(done=jnp.ones((), bool), stats=stats)
        live = ~state.done
        new = jax.tree.map(lambda a, b: jnp.where(live, a, b), new, state)
        obs = Chunk(jnp.full((self.max_obs_len,), self.tokenizer.pad_id, jnp.int32),
                    jnp.zeros((), jnp.int32))
        reward = jnp.where(live & correct, 1.0, 0.0).astype(jnp.float32)
        return obs, new, reward, new.done, dict(new.stats)

    def oracle_action(self, state: QAEnvState, size: int | None = None) -> Chunk:
        """The reference solution, `<answer>N</answer>` and EOS of the state's row (jittable).
        `size` pads or cuts the chunk (default `max_oracle_len`)."""
        toks, n = self.oracle_tokens[state.task.row], self.oracle_lens[state.task.row]
        size = size or self.max_oracle_len
        if size > toks.shape[0]:
            toks = jnp.pad(toks, (0, size - toks.shape[0]),
                           constant_values=self.tokenizer.pad_id)
        return Chunk(toks[:size], jnp.minimum(n, size).astype(jnp.int32))

    # -- parsing ---------------------------------------------------------------------------------
    def parse(self, action: Chunk) -> dict[str, Array]:
        """The action's last `<answer>N</answer>`: is_answer (an opening tag was found),
        answer_ok (a well-formed integer and a closing tag follow it), answer (int32, 0 unless
        ok). Jittable; any token ids (also out of the vocab) are allowed."""
        a = jnp.asarray(action.tokens, jnp.int32)
        n = action.length
        size = a.shape[0]
        pos = jnp.arange(size)
        op_t, op_l = self._open
        ends = jnp.stack([jnp.where(T.match_at(a, n, pos, op_t[i], op_l[i]), pos + op_l[i], -1)
                          for i in range(op_t.shape[0])])
        start = ends.max()                              # just after the last opening tag
        is_answer = start >= 0

        nt = self._num
        k = jnp.arange(NUM_WINDOW)
        w = jnp.take(a, start + k, mode="fill", fill_value=-1)
        w = jnp.where(start + k < n, w, -1)

        def look(table, fill):
            return jnp.take(table, w, mode="fill", fill_value=fill)

        digits, value, lead = look(nt["digits"], 0), look(nt["value"], 0), look(nt["lead"], False)
        is_digit = digits > 0
        s0 = look(nt["space"], False)[0].astype(jnp.int32)    # one whitespace token allowed
        neg = jnp.take(look(nt["minus"], False), s0)
        first = s0 + neg.astype(jnp.int32)
        # The number: digit tokens (only the first may carry a leading space), single commas
        # between digit tokens.
        digit_ok = is_digit & (~lead | (k == first))
        next_digit = jnp.append(digit_ok[1:], False)
        inside = digit_ok | (look(nt["comma"], False) & (k > first) & next_digit)
        run = (k >= first) & (jnp.cumprod(jnp.where(k >= first, inside, True)) > 0)
        n_run = run.sum()
        last = first + n_run - 1
        d = jnp.where(run & is_digit, digits, 0)
        total = d.sum()
        after = total - jnp.cumsum(d)                   # digits to the right of each token
        pow10 = jnp.asarray([10**i for i in range(T.MAX_DIGITS)], jnp.int32)
        mag = jnp.where(run & is_digit, value * jnp.take(pow10, after, mode="clip"), 0).sum()
        cl_t, cl_l = self._close
        end = start + first + n_run
        closed = jnp.stack([T.match_at(a, n, end, cl_t[i], cl_l[i])
                            for i in range(cl_t.shape[0])]).any()
        ok = (is_answer & (n_run > 0) & jnp.take(is_digit, first, mode="fill", fill_value=False)
              & jnp.take(is_digit, last, mode="fill", fill_value=False)
              & (total <= T.MAX_DIGITS) & closed)
        answer = jnp.where(ok, jnp.where(neg, -mag, mag), 0).astype(jnp.int32)
        return dict(is_answer=is_answer, answer_ok=ok, answer=answer)


def _table(rows: list[list[int]], size: int, pad_id: int) -> tuple[Array, Array]:
    out = np.full((len(rows), size), pad_id, np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return jnp.asarray(out), jnp.asarray([len(r) for r in rows], jnp.int32)


def _patterns(tok: Tokenizer, texts: Iterable[str]) -> tuple[Array, Array]:
    """The distinct encodings of `texts`, padded: (tokens [P, L] int32, lengths [P])."""
    seqs = sorted({tuple(tok.encode(t)) for t in texts})
    width = max(map(len, seqs))
    out = np.full((len(seqs), width), -1, np.int32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return jnp.asarray(out), jnp.asarray([len(s) for s in seqs], jnp.int32)


def _number_tables(tok: Tokenizer) -> Mapping[str, Array]:
    """Per token id: digits (number of decimal digits, 0 for non-number tokens), value, lead (a
    leading space), minus ('-' or ' -'), comma, space (whitespace only)."""
    v = tok.vocab_size
    digits = np.zeros((v,), np.int32)
    value = np.zeros((v,), np.int32)
    lead, minus, comma, space = (np.zeros((v,), bool) for _ in range(4))
    for i in range(v):
        text = tok.decode([i])
        m = _DIGITS.fullmatch(text)
        if m:
            digits[i], value[i], lead[i] = len(m.group(2)), int(m.group(2)), bool(m.group(1))
        minus[i] = text in ("-", " -")
        comma[i] = text == ","
        space[i] = bool(text) and not text.strip()
    return {k: jnp.asarray(x) for k, x in dict(digits=digits, value=value, lead=lead,
                                                minus=minus, comma=comma, space=space).items()}
