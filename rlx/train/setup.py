"""Builds everything a run needs from its config, validating the config before any compilation.

`build(config)` gives a `Setup`: tokenizer, env and its train/eval params, mesh, policy (and
critic), optimizers, the reward function and the jitted stages. `train_and_evaluate` and
`experiments/eval.py` share it, so evaluation sees exactly the model and envs training saw.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from rlx import envs, rewards, sharding
from rlx.models import Critic, ModelConfig, Policy
from rlx.models import hf as hf_models
from rlx.rollout.config import rollout_kwargs
from rlx.rollout.episodes import resolve_max_len
from rlx.tokenizer import hf as hf_tokenizer
from rlx.tokenizer import load_default
from rlx.train.optim import make_optimizer
from rlx.train.update import RLConfig
from rlx.train.workdir import resolve_path

CRITIC_ESTIMATORS = ("gae",)


@dataclasses.dataclass
class Setup:
    config: ml_collections.ConfigDict
    tokenizer: Any
    env: envs.Env
    env_params: Any            # training episodes
    eval_params: dict          # split name -> env params of the frozen evaluation sets
    mesh: jax.sharding.Mesh
    rules: tuple
    policy: Policy
    critic: Critic | None
    rl: RLConfig               # every setting of the RL step, validated
    sampling: dict             # keyword arguments of rlx.rollout.run_episodes
    reward_fn: Any             # jitted (traj, task) -> (total [B], components dict)
    # key -> initial params on the mesh; None: `policy.init` (random, from `config.model`).
    init_params: Callable[[jax.Array], Any] | None = None


def _fail(key: str, value: Any, allowed: Any) -> None:
    raise ValueError(f"{key}={value!r} is not allowed; allowed: {allowed}")


# (key, lowest allowed value, whether the lowest value itself is excluded): numbers that would
# otherwise train on nothing, write NaN, keep no checkpoint or crash after compute.
RANGES = (
    ("sft.steps", 0, False), ("rl.steps", 0, False),
    ("rollout.batch_size", 1, False), ("sft.batch_size", 1, False),
    ("eval.num_episodes", 1, False), ("checkpoint.every", 1, False), ("checkpoint.keep", 1, False),
    ("optim.lr", 0.0, True), ("sft.optim.lr", 0.0, True), ("critic_optim.lr", 0.0, True),
)


def _lookup(config: ml_collections.ConfigDict, key: str) -> Any:
    node = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    return node


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks names, ranges and divisibility that would otherwise fail deep inside a compile
    or, worse, run and produce nothing useful."""
    for key, low, strict in RANGES:
        value = _lookup(config, key)
        if value is not None and (value <= low if strict else value < low):
            _fail(key, value, f"{'>' if strict else '>='} {low}")
    rl = config.rl
    b, g = config.rollout.batch_size, config.rollout.group_size
    RLConfig.from_config(rl, g)   # names, modes and counts of the rl section
    sampled_at, scored_at = config.rollout.get("temperature", 1.0), rl.get("temperature", 1.0)
    if (sampled_at or 1.0) != (scored_at or 1.0):   # 0 (greedy) records untempered log-probs
        raise ValueError(f"rl.temperature={scored_at} differs from rollout.temperature="
                         f"{sampled_at}; allowed: equal (the RL step scores tokens at the "
                         "temperature they were sampled at; rl.temperature follows "
                         "rollout.temperature unless set)")
    if g < 1 or b % g:
        raise ValueError(f"rollout.group_size={g} does not divide rollout.batch_size={b}; "
                         f"allowed: divisors of {b}")
    if g < 2 and rl.advantage in ("grpo", "drgrpo", "rloo"):
        raise ValueError(f"rl.advantage={rl.advantage!r} needs rollout.group_size >= 2 "
                         f"(got {g})")
    if rl.dynamic_sampling and g < 2:
        raise ValueError(f"rl.dynamic_sampling=True needs rollout.group_size >= 2 (got {g}): a "
                         f"group of one always has equal rewards, so every row would be dropped")
    if b % rl.num_minibatches:
        raise ValueError(f"rl.num_minibatches={rl.num_minibatches} does not divide "
                         f"rollout.batch_size={b}")
    mesh_shape = sharding.resolve_mesh_shape(config.mesh.shape, jax.device_count())
    data = mesh_shape[0] * mesh_shape[1]
    for key, n in (("rollout.batch_size", b), ("sft.batch_size", config.sft.batch_size),
                   ("eval.num_episodes", config.eval.num_episodes)):
        if n % data:
            raise ValueError(f"{key}={n} is not divisible by the mesh's data x fsdp size {data} "
                             f"(mesh.shape={tuple(config.mesh.shape)})")
    pass_k, pass_tasks = config.eval.get("pass_k", 0), config.eval.get("pass_k_tasks", 0)
    if pass_k < 0 or not 0 <= pass_tasks <= config.eval.num_episodes:
        raise ValueError(f"eval.pass_k={pass_k}, eval.pass_k_tasks={pass_tasks}: allowed "
                         f"pass_k >= 0 (0 or 1: off) and 0 <= pass_k_tasks <= "
                         f"eval.num_episodes={config.eval.num_episodes} (0: all)")
    if config.env.name not in envs.ENVS:
        _fail("env.name", config.env.name, envs.ENVS.names())
    for name in config.rewards.keys():
        if name not in rewards.REWARDS:
            _fail(f"rewards.{name}", name, rewards.REWARDS.names())
    rollout_kwargs(config.rollout)
    model_config(config)


def hf_path(config: ml_collections.ConfigDict) -> str:
    """`config.init.hf_path`: a Hugging Face model directory to start from ("" or no `init`
    section: random init from `config.model`). A relative path that does not exist from the
    working directory is taken relative to the repository (as `config.json` stores it)."""
    init = config.get("init")
    path = (init.get("hf_path") or "") if init is not None else ""
    return resolve_path(path)


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The model of a run: `config.model`; or, with `config.init.hf_path`, the checkpoint's
    config.json with `config.model` as field overrides (precision, `max_len`, ...)."""
    path = hf_path(config)
    if not path:
        return ModelConfig.from_config(config.model)
    return ModelConfig.from_config(hf_models.load_config(path, **config.model.to_dict()))


def env_overrides(env_cfg: ml_collections.ConfigDict) -> dict:
    """Keyword arguments of `rlx.envs.make` from the `env` section (minus the rlx-only keys)."""
    skip = {"name", "train_axes", "eval_axes"}
    return {k: v for k, v in env_cfg.items() if k not in skip}


def build(config: ml_collections.ConfigDict) -> Setup:
    validate(config)
    path = hf_path(config)
    # A pretrained model comes with its own tokenizer (and chat template).
    tokenizer = hf_tokenizer.load(path) if path else load_default()
    model_cfg = model_config(config)
    if model_cfg.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"model.vocab_size={model_cfg.vocab_size} is smaller than the "
                         f"tokenizer's {tokenizer.vocab_size}")
    kw = env_overrides(config.env)
    env_args = inspect.signature(envs.ENVS.get(config.env.name).__init__).parameters
    if path and "tokenizer" in env_args:
        kw["tokenizer"] = tokenizer
    env, env_params = envs.make(config.env.name, split="train", axes=config.env.train_axes, **kw)
    sampling = rollout_kwargs(config.rollout)
    resolve_max_len(env, sampling["max_len"], sampling["max_rounds"], sampling["max_new_tokens"])
    eval_params = {
        "train": envs.make(config.env.name, split="train", axes=config.env.train_axes, **kw)[1],
        "heldout": envs.make(config.env.name, split="heldout", axes=config.env.eval_axes,
                             **kw)[1],
    }
    # Extra held-out sets (`eval.heldout_sets`, name -> axes): the same frozen tasks with other
    # axes held out, evaluated greedily next to the two main sets.
    for name, axes in (config.eval.get("heldout_sets") or {}).items():
        eval_params[f"heldout:{name}"] = envs.make(config.env.name, split="heldout", axes=axes,
                                                   **kw)[1]
    mesh = sharding.make_mesh(config.mesh)
    rules = sharding.rules_from_config(config.mesh.rules)
    policy = Policy(model_cfg, mesh=mesh, rules=rules)
    critic = (Critic(model_cfg, mesh=mesh, rules=rules)
              if config.rl.advantage in CRITIC_ESTIMATORS else None)
    init_params = None
    if path:
        overrides = config.model.to_dict()

        def init_params(key):  # the checkpoint, placed shard by shard on the mesh
            del key
            return hf_models.load(path, mesh=mesh, rules=rules, **overrides)[1]
    return Setup(config=config, tokenizer=tokenizer, env=env, env_params=env_params,
                 eval_params=eval_params, mesh=mesh, rules=rules, policy=policy, critic=critic,
                 rl=RLConfig.from_config(config.rl, config.rollout.group_size), sampling=sampling,
                 reward_fn=jax.jit(rewards.compose(config.rewards, tokenizer=tokenizer)),
                 init_params=init_params)


def optimizers(config: ml_collections.ConfigDict):
    """(sft optimizer, rl optimizer, critic optimizer)."""
    return (make_optimizer(config.sft.optim), make_optimizer(config.optim),
            make_optimizer(config.critic_optim))
