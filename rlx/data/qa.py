"""Question/answer text datasets in the GSM8K format (`question`, `answer` ending in `#### N`):
prompts for single-turn sampling and the task the `answer_match` reward checks.

    src = tfds.data_source("gsm8k", split="test")          # or a local `RlxQaLocal` build
    prompts, task = qa_prompts(src, tokenizer, max_prompt_len=256)
    traj = rlx.rollout.sample(policy, params, prompts, key, ...)
    total, comps = rlx.rewards.compose({"answer_match": 1.0})(traj, task)

The prompt asks for the final answer as `<answer>N</answer>`; `answer_match` reads the policy's
last such span from the tokens and compares it to the parsed reference. The text rules
(`SYSTEM`, `parse_answer`) are `rlx.envs.qa_text`'s, shared with the `qa` env.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from flax import struct

from rlx.envs.base import Chunk
from rlx.envs.qa_text import SYSTEM, as_text, parse_answer
from rlx.envs.scaffold.axes import chat_markers
from rlx.tokenizer.base import Tokenizer

Array = jax.Array


@struct.dataclass
class QATask:
    """answer [N] int32 (0 where invalid); valid [N] bool: the reference parsed as an integer."""

    answer: Array
    valid: Array


def qa_prompts(examples: Iterable[Mapping], tokenizer: Tokenizer, max_prompt_len: int,
               chat_template: int = 0, system: str = SYSTEM) -> tuple[Chunk, QATask]:
    """Prompts [N, max_prompt_len] (chat template `chat_template` of the scaffold axis, system
    text, the question, the assistant prefix) and the reference answers. A question whose prompt
    would not fit is an error naming its index and length."""
    chat = chat_markers(chat_template)
    toks, lens, answers, valid = [], [], [], []
    for i, ex in enumerate(examples):
        text = (chat["sys_start"] + system + chat["sys_end"] + chat["user_start"] + as_text(ex["question"])
                + chat["user_end"] + chat["asst_start"])
        ids = tokenizer.encode(text)
        if len(ids) > max_prompt_len:
            raise ValueError(f"example {i}: prompt has {len(ids)} tokens > max_prompt_len="
                             f"{max_prompt_len}")
        row = np.full((max_prompt_len,), tokenizer.pad_id, np.int32)
        row[: len(ids)] = ids
        toks.append(row)
        lens.append(len(ids))
        a, ok = parse_answer(as_text(ex["answer"]))
        answers.append(a)
        valid.append(ok)
    return (Chunk(jnp.asarray(np.stack(toks)), jnp.asarray(lens, jnp.int32)),
            QATask(jnp.asarray(answers, jnp.int32), jnp.asarray(valid, bool)))


@dataclasses.dataclass(eq=False)
class QaLocalConfig(tfds.core.BuilderConfig):
    """`examples`: ((question, answer), ...) pairs in the GSM8K format."""

    examples: Sequence[tuple[str, str]] = ()
    test_examples: Sequence[tuple[str, str]] = ()


class RlxQaLocal(tfds.core.GeneratorBasedBuilder):
    """A local dataset with GSM8K's features (`question`, `answer` text), built from given pairs
    (no download), so the QA path is testable offline."""

    VERSION = tfds.core.Version("1.0.0")
    # No checksums file or package metadata (nothing is downloaded); this also avoids TFDS
    # resolving the module path through `importlib_resources`, which is not installed.
    code_path = None
    BUILDER_CONFIGS = [QaLocalConfig(name="default")]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"question": tfds.features.Text(), "answer": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        return {"train": self._generate_examples(cfg.examples),
                "test": self._generate_examples(cfg.test_examples)}

    def _generate_examples(self, pairs):
        for i, (q, a) in enumerate(pairs):
            yield i, {"question": q, "answer": a}
