"""The text the default tokenizer is trained on: the built-in tasks' scaffolds rendered as plain
strings (every variant of every axis, both splits), with random tasks, calls, results and errors.

Plain Python (no tokenizer needed): `experiments/make_tokenizer.py` feeds it to SentencePiece.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator

import numpy as np

from rlx.envs import kvlookup, toolcalc
from rlx.envs import scaffold as S

# (tool kinds, user-prompt axis, slot text sampler) for each built-in task.
_TASKS = {
    "toolcalc": (toolcalc.ToolCalc.tools, toolcalc.USER_PROMPTS),
    "kvlookup": (kvlookup.KVLookup.tools, kvlookup.USER_PROMPTS),
}


def _slots(task: str, rng: random.Random) -> tuple[str, str]:
    if task == "toolcalc":
        n = rng.randint(1, 6)
        ops = [rng.randrange(3) for _ in range(n)]
        nums = [rng.randint(1, rng.choice((9, 9, 99))) for _ in range(n + 1)]
        return toolcalc.expression_text(ops, nums, n), ""
    return str(rng.randint(kvlookup.KEY_LO, kvlookup.KEY_HI - 1)), str(rng.randint(1, 8))


def _strings(v) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, (tuple, list)):
        return [s for x in v for s in _strings(x)]
    if hasattr(v, "__dataclass_fields__"):
        return [s for x in vars(v).values() for s in _strings(x)]
    return [str(v)]


def scaffold_corpus(n_episodes: int = 3000, seed: int = 0) -> Iterator[str]:
    """Deterministic stream of corpus lines (one rendered episode per line, plus every variant's
    text once, plus the printable ASCII alphabet so every character is a piece)."""
    rng = random.Random(seed)
    yield string.ascii_letters + string.digits + string.punctuation + " \n"
    axes_all = {}
    for task, (tools, users) in _TASKS.items():
        axes = dict(S.static_axes())
        axes["tool_order"] = S.tool_orders(len(tools))
        axes["user_prompt"] = users
        axes_all[task] = (tools, axes)
    for a in S.static_axes().values():
        for v in a.variants:
            yield "".join(_strings(v))
    tasks = sorted(axes_all)
    for _ in range(n_episodes):
        task = rng.choice(tasks)
        tools, axes = axes_all[task]
        variant = [rng.randrange(len(axes[a].variants)) for a in S.AXES]
        letters = np.array([[rng.randrange(26) for _ in range(3)] for _ in S.TOOL_KINDS])
        letters[:, 0] = S.MASK_FIRST
        names = S.text_names(variant[S.AXIS_INDEX["tool_names"]], letters)
        x, y = _slots(task, rng)
        text = S.prompt_text(axes, variant, tools, rng.random() < 0.3, names, x, y)
        for _ in range(rng.randint(1, 4)):
            kind = rng.choice(tools)
            args = [rng.randint(-99, 999) for _ in range(S.ARITY[kind])]
            text += S.call_text(axes, variant, names[kind], args)
            if rng.random() < 0.7:
                text += S.obs_text(axes, variant, result=rng.randint(-999, 9999))
            else:
                text += S.obs_text(axes, variant, error=rng.choice(S.ERROR_KINDS))
        text += S.answer_text(rng.randint(-99, 9999))
        if rng.random() < 0.2:
            text = "<think>" + text + "</think>"
        yield text
