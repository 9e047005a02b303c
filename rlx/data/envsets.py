"""A TFDS builder (array_record, no TensorFlow) of oracle demonstrations of the jittable envs:
`rlx_oracle_demos`, whole oracle episodes (tokens, policy_mask, lengths, scaffold and task) per
split, `train` (train scaffold variants) and `heldout`, for supervised training outside rlx's
own warm start (which plays the oracle on the fly, `rlx.train.demos`).

It is parameterized by an `EnvSetConfig` (env name and `make` overrides, which axes vary, sizes,
seed); building twice with the same config gives the same records. Read back with
`tfds.data_source` (`load_demos` does it and stacks to arrays).

    cfg = EnvSetConfig(name="toolcalc_s2", env="toolcalc", overrides=(("num_steps", 2),),
                       axes="all_axes", num_train=256, num_heldout=256)
    build(cfg, data_dir)
    demos = load_demos(cfg, data_dir, "heldout")

Evaluation sets are not stored: the trainer's frozen sets are defined by `eval.seed` and the env
config (`rlx.train.evaluation`), and a test pins their content.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np
import tensorflow_datasets as tfds

from rlx.envs import registry
from rlx.envs.scaffold import AXES, Scaffold
from rlx.envs.tool_env import Task
from rlx.rollout.scripted import play

SPLITS = ("train", "heldout")
_GEN_BATCH = 64


@dataclasses.dataclass(eq=False)
class EnvSetConfig(tfds.core.BuilderConfig):
    """`overrides`: (key, value) pairs for `rlx.envs.make` (hashable, recorded in the dataset).
    `axes`: which scaffold axes vary (a preset of `AXIS_PRESETS` or a tuple of names); the
    `train` split samples their train variants, `heldout` their held-out variants."""

    env: str = "toolcalc"
    overrides: tuple = ()
    axes: Any = "all_axes"
    num_train: int = 64
    num_heldout: int = 64
    seed: int = 0
    max_rounds: int = 0      # demos: 0 -> 3 * max_steps + 2 (enough for the oracle)


def make_env(cfg: EnvSetConfig, split: str):
    return registry.make(cfg.env, split=split, axes=cfg.axes, **dict(cfg.overrides))


def _task_features(env) -> dict:
    s = env.max_steps
    k = int(jax.eval_shape(env.sample_task, jax.random.PRNGKey(0),
                           env.default_params).table_keys.shape[0])
    t = tfds.features.Tensor
    return {
        "answer": t(shape=(), dtype=np.int32), "n_steps": t(shape=(), dtype=np.int32),
        "plan_tool": t(shape=(s,), dtype=np.int32), "plan_args": t(shape=(s, 2), dtype=np.int32),
        "table_keys": t(shape=(k,), dtype=np.int32), "table_values": t(shape=(k,), dtype=np.int32),
    }


def _scaffold_features(env) -> dict:
    """One feature per `Scaffold` field, shaped like the env's scaffolds."""
    sc = jax.eval_shape(env.tables.sample, jax.random.PRNGKey(0), 0, np.zeros(len(AXES), bool))
    return {f.name: tfds.features.Tensor(shape=getattr(sc, f.name).shape,
                                         dtype=np.dtype(getattr(sc, f.name).dtype))
            for f in dataclasses.fields(Scaffold)}


def _split_key(cfg: EnvSetConfig, split: str) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(cfg.seed), SPLITS.index(split))


def _rows(tree: Any, n: int):
    arrs = jax.tree.map(np.asarray, tree)
    for i in range(n):
        yield jax.tree.map(lambda a, i=i: a[i], arrs)


class RlxOracleDemos(tfds.core.GeneratorBasedBuilder):
    """Oracle episodes of a jittable env: tokens, policy mask, lengths, task and scaffold."""

    VERSION = tfds.core.Version("1.0.0")
    # No checksums file or package metadata (nothing is downloaded); this also avoids TFDS
    # resolving the module path through `importlib_resources`, which is not installed.
    code_path = None
    BUILDER_CONFIGS = [EnvSetConfig(name="default")]

    def _rounds(self, env) -> int:
        return self.builder_config.max_rounds or 3 * env.max_steps + 2

    def _max_len(self, env) -> int:
        return env.max_prompt_len + self._rounds(env) * (env.max_action_len + env.max_obs_len)

    def _info(self) -> tfds.core.DatasetInfo:
        env, _ = make_env(self.builder_config, "train")
        t, size = tfds.features.Tensor, self._max_len(env)
        features = tfds.features.FeaturesDict({
            "index": t(shape=(), dtype=np.int32),
            "tokens": t(shape=(size,), dtype=np.int32),
            "policy_mask": t(shape=(size,), dtype=np.bool_),
            "length": t(shape=(), dtype=np.int32),
            "prompt_length": t(shape=(), dtype=np.int32),
            "rounds": t(shape=(), dtype=np.int32),
            "correct": t(shape=(), dtype=np.bool_),
            "task": _task_features(env), "scaffold": _scaffold_features(env)})
        return tfds.core.DatasetInfo(builder=self, description=type(self).__doc__,
                                     features=features)

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        cfg = self.builder_config
        env, params = make_env(cfg, split)
        n = cfg.num_train if split == "train" else cfg.num_heldout
        run = _jitted_play(env, self._rounds(env), self._max_len(env))
        key = _split_key(cfg, split)
        for start in range(0, n, _GEN_BATCH):
            ep = run(params, jax.random.fold_in(key, start))
            out = dict(tokens=ep.tokens, policy_mask=ep.policy_mask, length=ep.length,
                       prompt_length=ep.prompt_length, rounds=ep.rounds,
                       correct=ep.info["correct"], task=_task_dict(ep.task),
                       scaffold=_scaffold_dict(ep.scaffold))
            for j, row in enumerate(_rows(out, min(_GEN_BATCH, n - start))):
                yield start + j, dict(row, index=np.int32(start + j))


def _scaffold_dict(sc: Scaffold) -> dict:
    return {f.name: getattr(sc, f.name) for f in dataclasses.fields(Scaffold)}


@functools.lru_cache(maxsize=16)
def _jitted_play(env, rounds: int, max_len: int):
    """Jitted oracle play of `_GEN_BATCH` episodes per env (params are traced), cached so that
    both splits and repeated builds compile once."""
    return jax.jit(lambda p, k: play(env, p, k, _GEN_BATCH, max_rounds=rounds, max_len=max_len))


def _task_dict(task: Task) -> dict:
    return {f.name: getattr(task, f.name) for f in dataclasses.fields(task)
            if f.name not in ("replace",)}


def build(cfg: EnvSetConfig, data_dir: str) -> tfds.core.DatasetBuilder:
    """Materialize the oracle demonstrations of `cfg` under `data_dir`."""
    builder = RlxOracleDemos(config=cfg, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return builder


def read(cfg: EnvSetConfig, data_dir: str, split: str) -> dict[str, Any]:
    """All records of a split via `tfds.data_source`, stacked (in `index` order) into arrays."""
    src = tfds.data_source(RlxOracleDemos.name, split=split, data_dir=data_dir, download=False,
                           builder_kwargs={"config": cfg})
    rows = [src[i] for i in range(len(src))]
    rows.sort(key=lambda r: int(r["index"]))
    return jax.tree.map(lambda *xs: np.stack(xs), *rows)


def load_demos(cfg: EnvSetConfig, data_dir: str, split: str = "train") -> dict[str, np.ndarray]:
    """Oracle demonstrations as arrays: tokens [N,T] int32, policy_mask [N,T] bool, length,
    prompt_length, rounds, correct [N], scaffold_heldout [N, len(AXES)] (the axes drawn from
    the held-out split), answer, n_steps [N]."""
    d = read(cfg, data_dir, split)
    return dict(tokens=d["tokens"], policy_mask=d["policy_mask"], length=d["length"],
                prompt_length=d["prompt_length"], rounds=d["rounds"], correct=d["correct"],
                scaffold_heldout=d["scaffold"]["heldout"], answer=d["task"]["answer"],
                n_steps=d["task"]["n_steps"])
