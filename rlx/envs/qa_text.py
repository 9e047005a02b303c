"""GSM8K-format text (`question`, `answer` ending in `#### N`): the system prompt, the reference
answer and the worked solution. Plain Python on the host, shared by the `qa` env and the
`rlx.data.qa` prompts."""

from __future__ import annotations

import re
from typing import Any

SYSTEM = "Solve the problem. Give the final number as <answer>N</answer>."
_CALC = re.compile(r"<<[^<>]*>>")   # GSM8K calculator annotations, e.g. <<3+4=7>>


def as_text(x: Any) -> str:
    """A dataset field as str (TFDS gives text features as bytes)."""
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def parse_answer(text: str) -> tuple[int, bool]:
    """GSM8K reference answer: the integer after the last '####' (commas removed).
    Returns (value, True), or (0, False) if there is none or it is not an integer."""
    if "####" not in text:
        return 0, False
    tail = text.rsplit("####", 1)[1].strip().replace(",", "").replace("$", "")
    if not re.fullmatch(r"-?\d+", tail):
        return 0, False
    value = int(tail)
    if abs(value) >= 10**9:
        return 0, False
    return value, True


def solution_text(answer: str) -> str:
    """The worked solution of a GSM8K answer: the text before `####`, calculator annotations
    (`<<3+4=7>>`) removed."""
    return _CALC.sub("", answer.rsplit("####", 1)[0]).strip()


__all__ = ["SYSTEM", "as_text", "parse_answer", "solution_text"]
