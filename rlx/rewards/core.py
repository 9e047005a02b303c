"""Jittable reward modules and their composition.

A reward is `fn(traj: Trajectory, task, params: dict) -> f32 [B]`, pure and jittable; it reads
`traj.info` (the env's cumulative episode info), `traj.tokens`, masks and lengths. Penalties are
negative values (so a config weight is always a positive scale). Register with
`@register(name, **default_params)`; `compose(config)` builds the weighted sum:

    fn = compose(ConfigDict({"correct": 1.0, "format": 0.1,
                             "overlong": {"weight": 1.0, "max_len": 256, "cache_len": 64}}))
    total, components = fn(traj, traj.task)      # components: name -> unweighted [B] values
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlx.envs import tokens as T
from rlx.registry import Registry

Array = jax.Array
RewardFn = Callable[[Any, Any, dict], Array]

REWARDS: Registry[RewardFn] = Registry("reward")
_DEFAULTS: dict[str, dict[str, Any]] = {}


def register(name: str, **defaults: Any) -> Callable[[RewardFn], RewardFn]:
    """Register a reward under `name` with its default params."""

    def add(fn: RewardFn) -> RewardFn:
        REWARDS.register(name)(fn)
        _DEFAULTS[name] = dict(defaults)
        return fn

    return add


def defaults(name: str) -> dict[str, Any]:
    REWARDS.get(name)
    return dict(_DEFAULTS[name])


def _f32(x: Array) -> Array:
    return jnp.asarray(x).astype(jnp.float32)


def _policy_tokens(traj) -> Array:
    return (traj.policy_mask & traj.valid_mask).sum(-1)


# -- rewards read from the env's episode info -------------------------------------------------
@register("correct")
def correct(traj, task, params) -> Array:
    """1 if the episode's answer was correct (env info `correct`), else 0."""
    return _f32(traj.info["correct"])


@register("format")
def format_ok(traj, task, params) -> Array:
    """1 if the episode ended with a well-formed answer and no malformed call, else 0."""
    info = traj.info
    return _f32(info["answered"] & info["answer_valid"] & (info["invalid_calls"] == 0))


@register("valid_call_rate")
def valid_call_rate(traj, task, params) -> Array:
    """Executed calls / call attempts (executed + malformed); 0 for an episode with neither."""
    ok, bad = _f32(traj.info["tool_calls"]), _f32(traj.info["invalid_calls"])
    return jnp.where(ok + bad > 0, ok / jnp.maximum(ok + bad, 1.0), 0.0)


@register("forbidden_tool")
def forbidden_tool(traj, task, params) -> Array:
    """-1 if the episode called the forbidden (answer-revealing) tool, else 0."""
    return -_f32(traj.info["used_forbidden_tool"])


@register("step_cost", per="tool_calls")
def step_cost(traj, task, params) -> Array:
    """-(number of `per`): tool calls (default) or policy rounds (`per="turns"`)."""
    if params["per"] not in ("tool_calls", "turns"):
        raise ValueError(f"step_cost per={params['per']!r}; allowed: 'tool_calls', 'turns'")
    return -_f32(traj.info[params["per"]])


# -- rewards read from the tokens -------------------------------------------------------------
@register("length", max_len=512)
def length_penalty(traj, task, params) -> Array:
    """-(policy tokens) / max_len: a linear length penalty."""
    return -_f32(_policy_tokens(traj)) / float(params["max_len"])


@register("overlong", max_len=512, cache_len=128, count="response")
def overlong(traj, task, params) -> Array:
    """DAPO soft overlong punishment (Yu et al. 2025, eq. 13) on the response length L:
    0 if L <= max_len - cache_len, linear down to -1 at L = max_len, -1 beyond.
    `count="response"`: tokens after the prompt (actions and observations, what fills the
    context); `count="policy"`: sampled tokens only."""
    if params["count"] == "response":
        n = traj.length - traj.prompt_length
    elif params["count"] == "policy":
        n = _policy_tokens(traj)
    else:
        raise ValueError(f"overlong count={params['count']!r}; allowed: 'response', 'policy'")
    hi, cache = float(params["max_len"]), float(params["cache_len"])
    n = _f32(n)
    return jnp.where(n <= hi - cache, 0.0, jnp.where(n <= hi, (hi - cache - n) / cache, -1.0))


@functools.lru_cache(maxsize=8)
def answer_ids(tokenizer) -> dict[str, Any]:
    """Token ids `answer_match` needs, from a tokenizer (digits and '-' must be single ids)."""
    digit_value = np.full((tokenizer.vocab_size,), -1, np.int32)
    for d in range(10):
        (i,) = tokenizer.encode(str(d))
        digit_value[i] = d
    (minus,) = tokenizer.encode("-")
    return dict(answer_open=tokenizer.token_id("<answer>"),
                answer_close=tokenizer.token_id("</answer>"), minus_id=minus,
                digit_value=digit_value)


@register("answer_match", tokenizer=None)
def answer_match(traj, task, params) -> Array:
    """1 if the policy's last `<answer>N</answer>` (N an integer, read from the tokens) equals
    `task.answer`, else 0. Needs no env info, so it checks any dataset with integer answers
    (e.g. GSM8K through `rlx.data.qa`). `task.answer` may carry a `valid` flag: rows with
    `task.valid == False` score 0."""
    ids = answer_ids(params["tokenizer"])

    def one(tokens, mask, length, answer):
        pos = jnp.arange(tokens.shape[0])
        opens = (tokens == ids["answer_open"]) & mask & (pos < length)
        last = jnp.where(opens.any(), tokens.shape[0] - 1 - jnp.argmax(opens[::-1]), -1)
        ok, value, end = T.parse_int(tokens, length, last + 1, jnp.asarray(ids["digit_value"]),
                                     ids["minus_id"])
        closed = T.match_at(tokens, length, end, jnp.asarray([ids["answer_close"]]), 1)
        return _f32((last >= 0) & ok & closed & (value == answer))

    got = jax.vmap(one)(traj.tokens, traj.policy_mask, traj.length, task.answer)
    valid = getattr(task, "valid", None)
    return got if valid is None else got * _f32(valid)


# -- learned and simulated-expert rewards -----------------------------------------------------
@functools.lru_cache(maxsize=4)
def _reward_model(path: str):
    from rlx.feedback import reward_model
    return reward_model.load(path)


@register("preference", path="")
def preference(traj, task, params) -> Array:
    """The score of a reward model learned from expert preferences (`path`: a directory that
    `rlx.feedback.reward_model.save` wrote), read at each episode's last token. Flags the experts
    raised are part of it: a flagged episode lost every comparison it was in."""
    if not params["path"]:
        raise ValueError("rewards.preference.path is empty: name a saved reward model directory "
                         "(python -m experiments.expert_feedback writes one)")
    rm, rm_params = _reward_model(params["path"])
    return rm.scores(rm_params, traj.tokens, traj.length)


@register("expert_gold")
def expert_gold(traj, task, params) -> Array:
    """The simulated expert's hidden criterion (`rlx.feedback.expert.gold`): what its judgements
    follow and no rule reward sees. Logged with weight 0, it measures what the expert wanted."""
    from rlx.feedback import expert
    return expert.gold(traj.info, xp=jnp)


# -- composition ------------------------------------------------------------------------------
def compose(config: Mapping[str, Any], tokenizer=None) -> Callable[[Any, Any], tuple[Array, dict]]:
    """Weighted sum of rewards named in `config`.

    Each entry is `name: weight` or `name: {weight: w, <param>: value, ...}` (params override
    the reward's defaults; unknown params are errors). Returns `fn(traj, task) ->
    (total [B] f32, {name: unweighted component [B] f32})`. `tokenizer` (default: the default
    tokenizer) is passed to rewards that read tokens.
    """
    terms = []
    for name in config.keys():
        spec = config[name]
        fn = REWARDS.get(name)
        params = defaults(name)
        if isinstance(spec, (int, float)):
            weight = float(spec)
        else:
            spec = dict(spec)
            if "weight" not in spec:
                raise KeyError(f"rewards.{name} needs a 'weight' (got keys {sorted(spec)})")
            weight = float(spec.pop("weight"))
            unknown = sorted(set(spec) - set(params))
            if unknown:
                raise KeyError(f"rewards.{name}: unknown params {unknown}; known: "
                               f"{sorted(params)}")
            params.update(spec)
        if "tokenizer" in params and params["tokenizer"] is None:
            if tokenizer is None:
                from rlx.tokenizer import load_default
                tokenizer = load_default()
            params["tokenizer"] = tokenizer
        terms.append((name, fn, weight, params))

    def total(traj, task) -> tuple[Array, dict[str, Array]]:
        comps = {n: f(traj, task, p).astype(jnp.float32) for n, f, _, p in terms}
        tot = sum((w * comps[n] for n, _, w, _ in terms),
                  jnp.zeros((traj.tokens.shape[0],), jnp.float32))
        return tot, comps

    return total
