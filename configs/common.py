"""Shared pieces of experiment configs: the `arg` parser and the model/mesh/rollout sections.

Every config module exposes `get_config(arg=None) -> ConfigDict` (big_vision style). `arg` is a
comma-separated list of flags and key=value pairs, e.g. `tiny,model=small,mesh=2x2x2`.
"""

from __future__ import annotations

import ml_collections

import rlx
from rlx import sharding


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses 'flag,key=value,...' into a ConfigDict over `defaults` (unknown keys are errors).

    A bare word sets a boolean default to True (`tiny`); `key=value` is converted to the type of
    the default (bool, int, float or str).
    """
    out = dict(defaults)
    for item in filter(None, (s.strip() for s in (arg or "").split(","))):
        key, sep, value = item.partition("=")
        if key not in out:
            raise ValueError(f"config arg {key!r} is unknown; known: {sorted(out)}")
        default = out[key]
        if not sep:
            if not isinstance(default, bool):
                raise ValueError(f"config arg {key!r} needs a value ({key}=...)")
            out[key] = True
        elif isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"config arg {key}={value!r}: allowed true/false")
            out[key] = value.lower() in ("true", "1")
        elif isinstance(default, int):
            out[key] = int(value)
        elif isinstance(default, float):
            out[key] = float(value)
        else:
            out[key] = value
    return ml_collections.ConfigDict(out)


def mesh_section(spec: str = "-1x1x1") -> ml_collections.ConfigDict:
    """`mesh` section from 'DxFxT' (sizes of data, fsdp, tensor; -1 = the rest)."""
    try:
        shape = tuple(int(s) for s in spec.split("x"))
    except ValueError as e:
        raise ValueError(f"mesh={spec!r}: expected DATAxFSDPxTENSOR, e.g. -1x1x1 or 2x2x2") from e
    cfg = sharding.mesh_config(shape)
    cfg.rules = None  # None: rlx.sharding.DEFAULT_RULES; or a tuple of (logical, mesh axes)
    return cfg


def model_section(name: str, **overrides) -> ml_collections.ConfigDict:
    """The `model` section: a named preset (`tiny`, `small`, `base`) with field overrides."""
    return rlx.models.preset(name, **overrides)


def rollout_section(**overrides) -> ml_collections.ConfigDict:
    """The `rollout` section: sampling options. `head_dtype=None` samples with the model's own
    LM-head precision; set it to produce a sampler/trainer precision mismatch on purpose."""
    cfg = ml_collections.ConfigDict(dict(
        temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=64, max_rounds=8, max_len=512,
        head_dtype=ml_collections.FieldReference(None, field_type=str)))
    for key, value in overrides.items():
        if key not in cfg:
            raise KeyError(f"rollout.{key} is not a rollout field; fields: {sorted(cfg.keys())}")
        cfg[key] = value
    return cfg
