"""Hugging Face checkpoints <-> rlx: `load`, `save`, and tiny random checkpoints for tests.

    cfg, params = rlx.models.hf.load("/ckpt/Qwen3-0.6B", mesh=mesh)   # onto the mesh, sharded
    rlx.models.hf.save("/out/step_1000", cfg, params, copy_files_from="/ckpt/Qwen3-0.6B")

Families: Llama (incl. 3.x rope scaling), Qwen2/2.5, Qwen3, Gemma and Gemma 2 (`FAMILIES`).
This module is the face: `config.json` <-> `ModelConfig` lives in `hf_config` (re-exported here),
parameter names and layouts in `hf_params`, the safetensors format in `hf_safetensors`.

Loading never holds a second copy of the model on the host: safetensors files are memory-mapped
and every device shard is cut out of the mapped tensors (transposed to rlx's layout on the fly,
stacked over layers for the scanned layout) by `jax.make_array_from_callback`, so the host only
ever holds one shard in flight. Saving streams one tensor (one layer's slice) at a time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, SingleDeviceSharding

from rlx import sharding as rsh
from rlx.files import read_json_object
from rlx.models.config import DTYPES, ModelConfig
from rlx.models.hf_config import ARCHITECTURES, FAMILIES, config_from_hf, config_to_hf, infer_family
from rlx.models.hf_params import Leaf, abstract_leaves, hf_order, leaf_map, path_keys
from rlx.models.hf_safetensors import SafetensorsDir, write_sharded
from rlx.models.policy import Policy

Params = Any


# ---- load ----------------------------------------------------------------------------------

def load_config(path: str, **overrides: Any) -> ml_collections.ConfigDict:
    """The rlx model ConfigDict of the Hugging Face directory `path` (reads config.json only)."""
    return _to_config_dict(config_from_hf(_read_json(path, "config.json"), **overrides))


def load(path: str, *, mesh: Mesh | None = None, rules=None,
         **overrides: Any) -> tuple[ml_collections.ConfigDict, Params]:
    """Reads a Hugging Face model directory into (model ConfigDict, params).

    Args:
      path: a local directory with config.json and model.safetensors (or several files with
        model.safetensors.index.json).
      mesh, rules: place every parameter straight into its sharding on `mesh` from the logical
        axis rules (default `rlx.sharding.DEFAULT_RULES`); without a mesh, on the default device.
      **overrides: rlx model fields to set, e.g. `param_dtype="float32"` (the default follows the
        checkpoint's dtype), `max_len`.
    """
    cfg = config_from_hf(_read_json(path, "config.json"), **overrides)
    reader = SafetensorsDir(path)
    leaves, treedef = abstract_leaves(cfg)
    if mesh is not None:
        specs = Policy(cfg).param_logical_specs()
        shardings = rsh.logical_to_sharding(specs, mesh, rsh.DEFAULT_RULES if rules is None
                                            else rules)
        flat_shardings = [s for _, s in jax.tree_util.tree_flatten_with_path(shardings)[0]]
    else:
        flat_shardings = [SingleDeviceSharding(jax.devices()[0])] * len(leaves)

    table = leaf_map(cfg)
    used: set[str] = set()
    arrays = []
    for (keys, leaf), sharding in zip(leaves, flat_shardings, strict=True):
        spec = table[keys]
        names = ([spec.name.format(i=i) for i in range(cfg.n_layers)] if spec.layered
                 else [spec.name])
        views = []
        want = leaf.shape[1:] if spec.layered else leaf.shape
        want_hf = jax.eval_shape(spec.to_hf, jax.ShapeDtypeStruct(want, leaf.dtype)).shape
        for name in names:
            if name not in reader:
                raise ValueError(f"{path}: tensor {name!r} is missing (needed for rlx param "
                                 f"{'/'.join(keys)}; config: {_feature_summary(cfg)})")
            if reader.shape(name) != tuple(want_hf):
                raise ValueError(f"{path}: tensor {name!r} has shape {reader.shape(name)} but "
                                 f"config.json implies {tuple(want_hf)} (rlx param "
                                 f"{'/'.join(keys)}, {want} per "
                                 f"{'layer' if spec.layered else 'model'} in rlx's layout)")
            views.append(spec.to_rlx(reader.view(name)))
        used.update(names)
        try:
            arrays.append(_place(views, spec.layered, leaf, sharding))
        except ValueError as e:  # jax's IndivisibleError is a ValueError
            raise ValueError(f"rlx param {'/'.join(keys)} of shape {leaf.shape} cannot be placed "
                             f"on the mesh: {e}. Choose a mesh shape or logical rules whose axis "
                             f"sizes divide it") from e
    ignorable = {"lm_head.weight"} if cfg.tie_embeddings else set()
    extra = sorted(n for n in reader.names if n not in used and n not in ignorable
                   and not n.endswith("rotary_emb.inv_freq"))
    if extra:
        raise ValueError(f"{path}: tensors {extra[:8]}{' ...' if len(extra) > 8 else ''} are "
                         f"not used by the rlx model (unsupported architecture features?)")
    return _to_config_dict(cfg), jax.tree_util.tree_unflatten(treedef, arrays)


def _place(views: list[np.ndarray], layered: bool, leaf: jax.ShapeDtypeStruct,
           sharding) -> jax.Array:
    """One device array built shard by shard from memory-mapped views (cast to leaf.dtype)."""
    dtype = np.dtype(leaf.dtype)

    def shard(index: tuple[slice, ...]) -> np.ndarray:
        if not layered:
            return np.asarray(views[0][index], dtype=dtype)
        rows = range(len(views))[index[0]]
        rest = index[1:]
        first = views[0][rest]
        out = np.empty((len(rows),) + first.shape, dtype)
        for j, i in enumerate(rows):
            out[j] = views[i][rest]
        return out

    return jax.make_array_from_callback(leaf.shape, sharding, shard)


def _feature_summary(cfg: ModelConfig) -> str:
    return (f"tie_embeddings={cfg.tie_embeddings}, qkv_bias={cfg.qkv_bias}, o_bias={cfg.o_bias}, "
            f"qk_norm={cfg.qk_norm}, post_norms={cfg.post_norms}")


def _read_json(path: str, name: str) -> dict:
    file = os.path.join(path, name)
    if not os.path.exists(file):
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory: no {name}")
    return read_json_object(file)


def _to_config_dict(cfg: ModelConfig) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dataclasses.asdict(cfg))


# ---- save ----------------------------------------------------------------------------------

_ASSET_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "tokenizer.model", "chat_template.jinja", "chat_template.json",
                "generation_config.json", "added_tokens.json", "vocab.json", "merges.txt")


def save(path: str, cfg: ModelConfig | ml_collections.ConfigDict | dict, params: Params, *,
         family: str | None = None, dtype: str | None = None, max_file_bytes: int = 2 << 30,
         config_overrides: dict | None = None, copy_files_from: str | None = None) -> str:
    """Writes `params` as a Hugging Face directory that transformers loads
    (`AutoModelForCausalLM.from_pretrained(path)`); returns the family written.

    Args:
      family: one of `FAMILIES`; default `infer_family(cfg)`. A family that cannot represent the
        config is refused, naming the fields.
      dtype: stored dtype (default: the config's param_dtype).
      max_file_bytes: split into several safetensors files (with an index) past this size.
      config_overrides: extra config.json keys (e.g. `eos_token_id`, `bos_token_id`).
      copy_files_from: a directory whose tokenizer, chat-template and generation-config files are
        copied alongside, so the result is a complete model directory.

    One tensor (one layer's slice of a stacked parameter) is gathered to the host at a time.
    """
    cfg = ModelConfig.from_config(cfg)
    family = family or infer_family(cfg)
    hf_cfg = config_to_hf(cfg, family, dtype)
    hf_cfg.update(config_overrides or {})
    np_dtype = np.dtype(DTYPES[hf_cfg["torch_dtype"]])

    table = leaf_map(cfg)
    flat = {path_keys(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    sources: dict[str, tuple[Any, int | None, Leaf]] = {}
    specs = []
    for keys, leaf in abstract_leaves(cfg)[0]:
        if keys not in flat:
            raise ValueError(f"params lack {'/'.join(keys)}, which the model config needs")
        x = flat.pop(keys)
        if tuple(x.shape) != tuple(leaf.shape):
            raise ValueError(f"param {'/'.join(keys)} has shape {tuple(x.shape)}; the config "
                             f"gives {tuple(leaf.shape)}")
        if not getattr(x, "is_fully_addressable", True):
            raise ValueError(f"param {'/'.join(keys)} spans several hosts; gather it "
                             f"(jax.experimental.multihost_utils.process_allgather) before save")
        spec = table[keys]
        for i in range(cfg.n_layers) if spec.layered else [None]:
            name = spec.name.format(i=i)
            one = jax.ShapeDtypeStruct(leaf.shape[1:] if spec.layered else leaf.shape, leaf.dtype)
            hf_shape = spec.to_hf(np.empty(one.shape, np.int8)).shape
            sources[name] = (x, i, spec)
            specs.append((name, hf_shape, np_dtype))
    if flat:
        raise ValueError(f"params have entries the model config does not: "
                         f"{['/'.join(k) for k in flat]}")
    specs.sort(key=lambda s: hf_order(s[0]))

    def produce(name: str) -> np.ndarray:
        x, i, spec = sources[name]
        if i is not None:
            x = x[i] if isinstance(x, np.ndarray) else _layer_slice(x, i)
        host = np.asarray(jax.device_get(x))
        return spec.to_hf(host)

    os.makedirs(path, exist_ok=True)
    write_sharded(path, specs, produce, max_file_bytes=max_file_bytes)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_cfg, f, indent=2, sort_keys=True)
    if copy_files_from is not None:
        for fname in _ASSET_FILES:
            src = os.path.join(copy_files_from, fname)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(path, fname))
    return family


@jax.jit
def _layer_slice(x: jax.Array, i: jax.Array) -> jax.Array:
    # One layer of a stacked parameter, compiled once per shape (not one dispatch per index).
    return jax.lax.dynamic_index_in_dim(x, i, keepdims=False)


# ---- tiny random checkpoints ----------------------------------------------------------------

# Odd sizes on purpose: GQA ratio > 1, head_dim != d_model / n_heads where the family allows it.
_TINY = {
    "llama": dict(vocab_size=97, d_model=48, n_layers=3, n_heads=6, n_kv_heads=2, head_dim=12,
                  d_ff=72, tie_embeddings=False, rope_theta=500_000.0, rope_type="llama3",
                  rope_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                  rope_original_max_len=64, max_len=256),
    "qwen2": dict(vocab_size=101, d_model=48, n_layers=3, n_heads=6, n_kv_heads=2, head_dim=8,
                  d_ff=80, qkv_bias=True, tie_embeddings=True, rope_theta=1_000_000.0,
                  max_len=256),
    "qwen3": dict(vocab_size=103, d_model=40, n_layers=3, n_heads=4, n_kv_heads=1, head_dim=16,
                  d_ff=56, qk_norm=True, tie_embeddings=False, rope_type="yarn", rope_factor=4.0,
                  rope_original_max_len=64, max_len=256),
    "gemma": dict(vocab_size=107, d_model=36, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=12,
                  d_ff=64, tie_embeddings=True, mlp_activation="gelu_tanh", norm_plus_one=True,
                  embed_scale=True, max_len=256),
    "gemma2": dict(vocab_size=109, d_model=48, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=16,
                   d_ff=72, tie_embeddings=True, mlp_activation="gelu_tanh", norm_plus_one=True,
                   embed_scale=True, post_norms=True, query_pre_attn_scalar=24.0,
                   attn_softcap=5.0, final_softcap=3.0, layer_windows=(4, 0, 4, 0), max_len=256),
}


def tiny_config(family: str, **overrides: Any) -> ModelConfig:
    """A tiny rlx config of Hugging Face `family` (odd sizes: GQA, head_dim != d/heads)."""
    if family not in _TINY:
        raise ValueError(f"family={family!r} is unknown; known: {list(_TINY)}")
    return ModelConfig.from_config({**_TINY[family], **overrides})


def make_tiny_checkpoint(path: str, family: str = "qwen2", *, seed: int = 0,
                         dtype: str = "float32", max_file_bytes: int = 2 << 30,
                         **overrides: Any) -> str:
    """Writes a tiny random Hugging Face checkpoint of `family` to `path` (no download, no
    torch) and returns `path`. Norm scales and biases are random too, so every parameter matters.
    `overrides` change `tiny_config` fields; a small `max_file_bytes` gives several files."""
    cfg = tiny_config(family, **overrides)
    # Random values straight from numpy (no model compile). Weights have std 0.1, wider than the
    # usual init, so logits are O(1) and parity checks are not trivially met.
    rng = np.random.default_rng(seed)
    leaves, treedef = abstract_leaves(cfg)
    out = []
    for keys, leaf in leaves:
        base = 1.0 if keys[-1] == "scale" and not cfg.norm_plus_one else 0.0
        x = base + 0.1 * rng.standard_normal(leaf.shape, np.float32)
        out.append(x.astype(np.dtype(leaf.dtype)))
    params = jax.tree_util.tree_unflatten(treedef, out)
    save(path, cfg, params, family=family, dtype=dtype, max_file_bytes=max_file_bytes)
    return path


__all__ = ["ARCHITECTURES", "FAMILIES", "config_from_hf", "config_to_hf", "infer_family", "load",
           "load_config", "make_tiny_checkpoint", "save", "tiny_config"]
