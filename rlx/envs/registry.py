"""The env registry and `make(name, **overrides) -> (env, params)`."""

from __future__ import annotations

import inspect
from typing import Any

from rlx.envs.base import Env
from rlx.envs.kvlookup import KVLookup
from rlx.envs.qa_env import QAEnv
from rlx.envs.tool_env import ToolEnvParams, default_params
from rlx.envs.toolcalc import ToolCalc
from rlx.registry import Registry

ENVS: Registry[type] = Registry("env")
ENVS.register("toolcalc")(ToolCalc)
ENVS.register("kvlookup")(KVLookup)
ENVS.register("qa")(QAEnv)

_CACHE: dict[tuple, Env] = {}


def make(name: str, **overrides: Any) -> tuple[Env, ToolEnvParams]:
    """Build a registered env and its params.

    Overrides that are constructor arguments (shapes: `max_steps`, `table_size`, `tokenizer`)
    go to the env; the rest are params fields (`num_steps`, `min_steps`, `max_operand`,
    `fault_rate`, `hackable`, `max_turns`, `split` ("train", "heldout" or "heldout:<axes>"),
    `axes` (a preset of `rlx.envs.scaffold.AXIS_PRESETS` or axis names, a tuple or joined by
    "+").
    `max_steps` defaults to max(4, num_steps). Envs are cached (a custom tokenizer by identity),
    so `make` twice gives the same env object (and jitted functions keyed on it are reused).

        env, params = rlx.envs.make("toolcalc", num_steps=2, axes="tools_only")
        obs, state = jax.vmap(env.reset, (0, None))(keys, params)
    """
    cls = ENVS.get(name)
    ctor_names = set(inspect.signature(cls.__init__).parameters) - {"self"}
    ctor = {k: v for k, v in overrides.items() if k in ctor_names}
    prm = {k: v for k, v in overrides.items() if k not in ctor_names}
    if "max_steps" not in ctor:
        ctor["max_steps"] = max(4, int(prm.get("num_steps", 2)))
    params = default_params(**prm)
    if ctor.get("tokenizer") is None:
        ctor.pop("tokenizer", None)
    # A custom tokenizer is keyed by identity: the cached env holds it, so the id stays valid.
    key = (name,) + tuple(sorted((k, id(v) if k == "tokenizer" else v) for k, v in ctor.items()))
    try:
        if key not in _CACHE:
            _CACHE[key] = cls(**ctor)
    except TypeError:  # an unhashable constructor argument: build without caching
        return cls(**ctor), params
    return _CACHE[key], params
