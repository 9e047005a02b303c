"""Sampling options: one frozen, hashable `SamplingConfig`, read from the `rollout` config section.

The trainer calls `rlx.rollout.run_episodes(..., **rollout_kwargs(config.rollout))`; the same keys
are the keyword arguments of `sample` and `run_episodes`, so a command-line override such as
`--config.rollout.head_dtype=bfloat16` reaches the sampler without code changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from rlx.models import DTYPES


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Static sampling options (part of the compile key: changing one recompiles).

    temperature:     0 = greedy; otherwise logits are divided by it.
    top_k:           keep the k most likely tokens (0 = off).
    top_p:           nucleus mass (1.0 = off).
    max_new_tokens:  per call of `sample`; per round in `run_episodes`.
    max_len:         total row length (prompt + everything after it); also the KV cache size.
                     0 = prompt + max_new_tokens (sample) / the worst case (run_episodes).
    max_rounds:      policy segments per episode (run_episodes only).
    head_dtype:      LM-head dtype of the sampler; None = the model's `head_dtype`.
    stop_tokens:     extra stop token ids (run_episodes adds the env's `stop_token_ids`).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    max_len: int = 0
    max_rounds: int = 1
    head_dtype: str | None = None
    stop_tokens: tuple[int, ...] = ()

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"rollout.temperature={self.temperature} must be >= 0 (0 = greedy)")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"rollout.top_k={self.top_k!r} must be an int >= 0 (0 = off)")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"rollout.top_p={self.top_p} must be in (0, 1] (1 = off)")
        if self.max_new_tokens < 1:
            raise ValueError(f"rollout.max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.max_len < 0:
            raise ValueError(f"rollout.max_len={self.max_len} must be >= 0 (0 = derived)")
        if self.max_rounds < 1:
            raise ValueError(f"rollout.max_rounds={self.max_rounds} must be >= 1")
        if self.head_dtype is not None and self.head_dtype not in DTYPES:
            raise ValueError(f"rollout.head_dtype={self.head_dtype!r} is not allowed; allowed: "
                             f"{sorted(DTYPES)} or None (the model's)")
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))
        object.__setattr__(self, "stop_tokens", tuple(sorted({int(t) for t in self.stop_tokens})))

    def replace(self, **changes: Any) -> SamplingConfig:
        return dataclasses.replace(self, **changes)


#: Keys of the `rollout` section that `rollout_kwargs` passes on (besides SamplingConfig fields).
EPISODE_KEYS = ("batch_size", "group_size")
SAMPLING_KEYS = tuple(f.name for f in dataclasses.fields(SamplingConfig))


def rollout_kwargs(cfg: ml_collections.ConfigDict | dict) -> dict[str, Any]:
    """Keyword arguments for `sample` / `run_episodes` from a `rollout` config section.

    Reads the SamplingConfig fields and `batch_size`, `group_size` where present (the section
    built by `configs/common.py:rollout_section`); other keys of the section (the trainer's) are
    left alone. An empty or None head_dtype means "the model's". Values are validated by building
    a SamplingConfig, so a bad value fails here with its `rollout.<key>` name.
    """
    values = dict(cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else cfg)
    out = {k: values[k] for k in SAMPLING_KEYS + EPISODE_KEYS if k in values}
    if not out.get("head_dtype"):
        out.pop("head_dtype", None)
    if "stop_tokens" in out:
        out["stop_tokens"] = tuple(out["stop_tokens"] or ())
    SamplingConfig(**{k: v for k, v in out.items() if k in SAMPLING_KEYS})
    return out
