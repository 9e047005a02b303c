"""Hugging Face checkpoints <-> rlx: `load`, `save`, and tiny random checkpoints for tests.

    cfg, params = rlx.models.hf.load("/ckpt/Qwen3-0.6B", mesh=mesh)   # onto the mesh, sharded
    rlx.models.hf.save("/out/step_1000", cfg, params, copy_files_from="/ckpt/Qwen3-0.6B")

Families: Llama (incl. 3.x rope scaling), Qwen2/2.5, Qwen3, Gemma and Gemma 2 (`FAMILIES`).
`config.json` is mapped onto `ModelConfig` fields (biases, q/k norm, tied embeddings, GQA, rope
theta and scaling, Gemma's embedding scale and (1 + w) norms, Gemma 2's soft-capping, query scalar,
sliding-window layers and post-norms); anything that would change the computation and that rlx does
not implement is refused with a message naming it.

Loading never holds a second copy of the model on the host: safetensors files are memory-mapped
and every device shard is cut out of the mapped tensors (transposed to rlx's layout on the fly,
stacked over layers for the scanned layout) by `jax.make_array_from_callback`, so the host only
ever holds one shard in flight. Saving streams one tensor (one layer's slice) at a time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, SingleDeviceSharding

from rlx.files import read_json_object
from rlx.models.config import DTYPES, ROPE_TYPES, ModelConfig
from rlx.models.hf_safetensors import SafetensorsDir, write_sharded

Params = Any

FAMILIES = ("llama", "qwen2", "qwen3", "gemma", "gemma2")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "qwen3": "Qwen3ForCausalLM", "gemma": "GemmaForCausalLM",
                 "gemma2": "Gemma2ForCausalLM"}

# Defaults of the transformers config classes, used where a config.json omits the key.
_DEFAULTS = {
    "llama": dict(tie_word_embeddings=False, max_position_embeddings=2048, hidden_act="silu",
                  head_dim=None),
    "qwen2": dict(tie_word_embeddings=False, max_position_embeddings=32768, hidden_act="silu",
                  head_dim=None, max_window_layers=28, sliding_window=4096),
    "qwen3": dict(tie_word_embeddings=False, max_position_embeddings=32768, hidden_act="silu",
                  head_dim=128, max_window_layers=28, sliding_window=4096),
    "gemma": dict(tie_word_embeddings=True, max_position_embeddings=8192,
                  hidden_act="gelu_pytorch_tanh", head_dim=256),
    "gemma2": dict(tie_word_embeddings=True, max_position_embeddings=8192,
                   hidden_activation="gelu_pytorch_tanh", head_dim=256, query_pre_attn_scalar=256,
                   attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4096),
}
# Hugging Face activation name -> rlx `mlp_activation` (gelu_new is the same tanh formula).
_ACT_FROM_HF = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh",
                "gelu_new": "gelu_tanh", "gelu": "gelu"}
_ACT_TO_HF = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}
_ROPE_KEYS = {"rope_type", "type", "rope_theta", "factor", "original_max_position_embeddings",
              "low_freq_factor", "high_freq_factor", "attention_factor", "beta_fast", "beta_slow",
              "mscale", "mscale_all_dim", "truncate", "partial_rotary_factor"}
_LAYER_TYPES = ("full_attention", "sliding_attention")


# ---- config.json <-> ModelConfig ------------------------------------------------------------

def config_from_hf(hf: dict, **overrides: Any) -> ModelConfig:
    """Maps a Hugging Face `config.json` dict onto a validated `ModelConfig`.

    `overrides` set rlx fields afterwards (e.g. `param_dtype="float32"`, `max_len=4096`).
    Precision defaults: `param_dtype` and `dtype` follow the checkpoint's `torch_dtype`/`dtype`
    (float32 if absent), `head_dtype` is float32.
    """
    family = hf.get("model_type")
    if family not in FAMILIES:
        raise ValueError(f"config.json model_type={family!r} is not supported; supported: "
                         f"{list(FAMILIES)}")
    arch = ARCHITECTURES[family]
    for a in hf.get("architectures") or [arch]:
        if a != arch:
            raise ValueError(f"config.json architectures={hf['architectures']!r}: rlx loads "
                             f"{arch!r} (the causal LM) for model_type={family!r}")
    hf = {**_DEFAULTS[family], **{k: v for k, v in hf.items() if v is not None or k in (
        "attn_logit_softcapping", "final_logit_softcapping", "sliding_window")}}
    _refuse(hf, "quantization_config", lambda v: v is not None, "quantized checkpoints")
    _refuse(hf, "mlp_bias", bool, "MLP biases")
    _refuse(hf, "use_bidirectional_attention", bool, "bidirectional attention")
    _refuse(hf, "partial_rotary_factor", lambda v: v not in (None, 1, 1.0), "partial rotary")

    d, heads = hf["hidden_size"], hf["num_attention_heads"]
    act_key = "hidden_activation" if family == "gemma2" else "hidden_act"
    act = hf.get(act_key)
    if family == "gemma" and act == "gelu":
        act = "gelu_pytorch_tanh"  # what transformers does: Gemma's "gelu" meant the tanh form
    if act not in _ACT_FROM_HF:
        raise ValueError(f"config.json {act_key}={act!r} is not supported; allowed: "
                         f"{sorted(_ACT_FROM_HF)}")
    attention_bias = bool(hf.get("attention_bias", False))
    fields: dict[str, Any] = dict(
        vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["num_hidden_layers"],
        n_heads=heads, n_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or d // heads, d_ff=hf["intermediate_size"],
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        qkv_bias=True if family == "qwen2" else attention_bias,
        o_bias=False if family == "qwen2" else attention_bias,
        qk_norm=family == "qwen3",
        tie_embeddings=bool(hf["tie_word_embeddings"]),
        max_len=int(hf["max_position_embeddings"]),
        mlp_activation=_ACT_FROM_HF[act],
        norm_plus_one=family in ("gemma", "gemma2"),
        embed_scale=family in ("gemma", "gemma2"),
    )
    if family == "gemma2":
        fields.update(
            post_norms=True,
            query_pre_attn_scalar=float(hf["query_pre_attn_scalar"]),
            attn_softcap=float(hf.get("attn_logit_softcapping") or 0.0),
            final_softcap=float(hf.get("final_logit_softcapping") or 0.0))
    fields["layer_windows"] = _windows_from_hf(hf, family)
    fields.update(_rope_from_hf(hf))
    stored = hf.get("dtype") or hf.get("torch_dtype") or "float32"
    stored = stored if stored in DTYPES else "float32"
    fields.update(dtype=stored, param_dtype=stored, head_dtype="float32")
    fields.update(overrides)
    return ModelConfig.from_config(fields)


def _refuse(hf: dict, key: str, bad: Callable[[Any], bool], what: str):
    if key in hf and bad(hf[key]):
        raise ValueError(f"config.json {key}={hf[key]!r}: {what} are not supported by rlx")


def _windows_from_hf(hf: dict, family: str) -> tuple[int, ...]:
    n = hf["num_hidden_layers"]
    if family in ("llama", "gemma"):
        return ()  # these architectures have no sliding-window layers
    if family == "gemma2":
        window = hf.get("sliding_window")
        default = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n)]
    else:  # qwen2, qwen3: sliding only with use_sliding_window, from max_window_layers on
        window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
        default = ["sliding_attention" if window and i >= hf["max_window_layers"]
                   else "full_attention" for i in range(n)]
    types = hf.get("layer_types") or default
    if len(types) != n or any(t not in _LAYER_TYPES for t in types):
        raise ValueError(f"config.json layer_types={types!r} must name one of {_LAYER_TYPES} "
                         f"per layer (num_hidden_layers={n})")
    windows = tuple(int(window) if (t == "sliding_attention" and window) else 0 for t in types)
    return windows if any(windows) else ()


def _rope_from_hf(hf: dict) -> dict[str, Any]:
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if any(isinstance(v, dict) for v in rope.values()):
        raise ValueError(f"config.json rope_parameters={rope!r}: per-layer-type rope parameters "
                         f"are not supported")
    unknown = sorted(set(rope) - _ROPE_KEYS)
    if unknown:
        raise ValueError(f"config.json rope_scaling keys {unknown} are not supported; known keys: "
                         f"{sorted(_ROPE_KEYS)}")
    if rope.get("partial_rotary_factor") not in (None, 1, 1.0):
        raise ValueError(f"config.json rope partial_rotary_factor="
                         f"{rope['partial_rotary_factor']!r}: partial rotary is not supported")
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise ValueError(f"config.json rope_scaling.rope_type={kind!r} is not supported; "
                         f"allowed: {list(ROPE_TYPES)}")
    out: dict[str, Any] = dict(
        rope_type=kind, rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0))))
    if kind == "default":
        return out
    max_pos = int(hf["max_position_embeddings"])
    original = int(hf.get("original_max_position_embeddings")
                   or rope.get("original_max_position_embeddings") or max_pos)
    factor = rope.get("factor")
    if factor is None and kind == "yarn":
        factor = max_pos / original  # transformers' rule when a yarn config gives no factor
    if factor is None:
        raise ValueError(f"config.json rope_scaling={rope!r}: rope_type {kind!r} needs 'factor'")
    out.update(rope_factor=float(factor), rope_original_max_len=original)
    if kind == "llama3":
        for key in ("low_freq_factor", "high_freq_factor"):
            if key not in rope:
                raise ValueError(f"config.json rope_scaling={rope!r}: llama3 rope needs {key!r}")
        out.update(rope_low_freq_factor=float(rope["low_freq_factor"]),
                   rope_high_freq_factor=float(rope["high_freq_factor"]))
    elif kind == "yarn":
        attention = rope.get("attention_factor")
        mscale, mscale_all = rope.get("mscale"), rope.get("mscale_all_dim")
        if attention is None and mscale and mscale_all:
            def get_mscale(scale, m):
                return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
            attention = get_mscale(factor, mscale) / get_mscale(factor, mscale_all)
        out.update(rope_beta_fast=float(rope.get("beta_fast") or 32.0),
                   rope_beta_slow=float(rope.get("beta_slow") or 1.0),
                   rope_attention_factor=float(attention or 0.0),
                   rope_truncate=bool(rope.get("truncate", True)))
    return out


def infer_family(cfg: ModelConfig) -> str:
    """The Hugging Face family that represents `cfg` (checked by `config_to_hf`)."""
    if cfg.post_norms or cfg.attn_softcap or cfg.final_softcap:
        return "gemma2"
    if cfg.norm_plus_one or cfg.embed_scale:
        return "gemma2" if any(cfg.layer_windows) else "gemma"
    if cfg.qk_norm:
        return "qwen3"
    if cfg.qkv_bias and not cfg.o_bias:
        return "qwen2"
    return "llama"


def config_to_hf(cfg: ModelConfig, family: str | None = None,
                 dtype: str | None = None) -> dict[str, Any]:
    """The `config.json` of `cfg` as Hugging Face `family` (default: `infer_family`). Raises,
    naming the fields, if the family cannot represent the config."""
    cfg = ModelConfig.from_config(cfg)
    family = family or infer_family(cfg)
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not supported; supported: {list(FAMILIES)}")
    gemma = family in ("gemma", "gemma2")
    required = {
        "norm_plus_one": gemma, "embed_scale": gemma, "post_norms": family == "gemma2",
        "qk_norm": family == "qwen3",
    }
    if family == "qwen2":
        required.update(qkv_bias=True, o_bias=False)
    if family != "gemma2":
        required.update(attn_softcap=0.0, final_softcap=0.0)
    bad = [f"model.{k}={getattr(cfg, k)!r} (needs {v!r})" for k, v in required.items()
           if getattr(cfg, k) != v]
    if family != "qwen2" and cfg.qkv_bias != cfg.o_bias:
        bad.append(f"model.qkv_bias={cfg.qkv_bias} with model.o_bias={cfg.o_bias} (family "
                   f"{family!r} has one attention_bias for q, k, v and o)")
    if family != "gemma2" and cfg.query_pre_attn_scalar not in (0, cfg.head_dim):
        bad.append(f"model.query_pre_attn_scalar={cfg.query_pre_attn_scalar} (needs 0)")
    windows = sorted({w for w in cfg.layer_windows if w})
    if windows and (family in ("llama", "gemma") or len(windows) > 1):
        bad.append(f"model.layer_windows={cfg.layer_windows} ({family!r} allows "
                   f"{'no' if family in ('llama', 'gemma') else 'one'} sliding window size)")
    if family == "gemma" and cfg.mlp_activation == "gelu":
        bad.append("model.mlp_activation='gelu' (transformers runs Gemma's gelu as gelu_tanh)")
    if bad:
        raise ValueError(f"this model cannot be saved as Hugging Face {family!r}: "
                         + "; ".join(bad))

    dtype = dtype or cfg.param_dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not allowed; allowed: {sorted(DTYPES)}")
    hf: dict[str, Any] = {
        "architectures": [ARCHITECTURES[family]], "model_type": family,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim, "rms_norm_eps": cfg.norm_eps,
        "max_position_embeddings": cfg.max_len, "tie_word_embeddings": cfg.tie_embeddings,
        "rope_theta": cfg.rope_theta, "rope_scaling": _rope_to_hf(cfg),
        "torch_dtype": dtype,
    }
    act = _ACT_TO_HF[cfg.mlp_activation]
    hf["hidden_activation" if family == "gemma2" else "hidden_act"] = act
    if family != "qwen2":
        hf["attention_bias"] = cfg.qkv_bias
    if family == "llama":
        hf["mlp_bias"] = False
    if family == "gemma2":
        scalar = cfg.query_pre_attn_scalar or cfg.head_dim
        hf.update(query_pre_attn_scalar=int(scalar) if float(scalar).is_integer() else scalar,
                  attn_logit_softcapping=cfg.attn_softcap or None,
                  final_logit_softcapping=cfg.final_softcap or None,
                  sliding_window=windows[0] if windows else None,
                  layer_types=_layer_types(cfg))
    if family in ("qwen2", "qwen3"):
        first = next((i for i, w in enumerate(cfg.layer_windows) if w), cfg.n_layers)
        hf.update(use_sliding_window=bool(windows), sliding_window=windows[0] if windows else None,
                  max_window_layers=first, layer_types=_layer_types(cfg))
    return hf


def _layer_types(cfg: ModelConfig) -> list[str]:
    windows = cfg.layer_windows or (0,) * cfg.n_layers
    return [_LAYER_TYPES[bool(w)] for w in windows]


def _rope_to_hf(cfg: ModelConfig) -> dict[str, Any] | None:
    if cfg.rope_type == "default":
        return None
    rope: dict[str, Any] = {"rope_type": cfg.rope_type, "factor": cfg.rope_factor}
    if cfg.rope_type in ("llama3", "yarn"):
        rope["original_max_position_embeddings"] = cfg.rope_original_max_len
    if cfg.rope_type == "llama3":
        rope.update(low_freq_factor=cfg.rope_low_freq_factor,
                    high_freq_factor=cfg.rope_high_freq_factor)
    if cfg.rope_type == "yarn":
        rope.update(beta_fast=cfg.rope_beta_fast, beta_slow=cfg.rope_beta_slow,
                    truncate=cfg.rope_truncate)
        if cfg.rope_attention_factor:
            rope["attention_factor"] = cfg.rope_attention_factor
    return rope


# ---- parameter names and layouts ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Leaf:
    """How one rlx parameter maps to Hugging Face tensors.

    `name`: the HF tensor name (with `{i}` for the layer of a stacked parameter). `to_rlx` turns
    an HF tensor (a numpy view) into the rlx layout of one layer, as a view; `to_hf` inverts it.
    """

    name: str
    layered: bool
    to_rlx: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def _leaf_map(cfg: ModelConfig) -> dict[tuple[str, ...], _Leaf]:
    d, h, kv, dh = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    ident = lambda x: x  # noqa: E731
    transpose = lambda x: x.T  # noqa: E731

    def layer(name, to_rlx=ident, to_hf=ident):
        return _Leaf("model.layers.{i}." + name, True, to_rlx, to_hf)

    def proj_in(heads):  # HF [heads*dh, d] <-> rlx [d, heads, dh]
        return (lambda w: w.T.reshape(d, heads, dh), lambda k: k.reshape(d, heads * dh).T)

    def bias(heads):  # HF [heads*dh] <-> rlx [heads, dh]
        return (lambda b: b.reshape(heads, dh), lambda b: b.reshape(heads * dh))

    a = "self_attn."
    out = {
        ("embed", "embedding"): _Leaf("model.embed_tokens.weight", False, ident, ident),
        ("final_norm", "scale"): _Leaf("model.norm.weight", False, ident, ident),
        ("lm_head",): _Leaf("lm_head.weight", False, transpose, transpose),
        ("layers", "attn", "q_proj", "kernel"): layer(a + "q_proj.weight", *proj_in(h)),
        ("layers", "attn", "k_proj", "kernel"): layer(a + "k_proj.weight", *proj_in(kv)),
        ("layers", "attn", "v_proj", "kernel"): layer(a + "v_proj.weight", *proj_in(kv)),
        ("layers", "attn", "q_proj", "bias"): layer(a + "q_proj.bias", *bias(h)),
        ("layers", "attn", "k_proj", "bias"): layer(a + "k_proj.bias", *bias(kv)),
        ("layers", "attn", "v_proj", "bias"): layer(a + "v_proj.bias", *bias(kv)),
        # HF [d, h*dh] <-> rlx [h, dh, d]
        ("layers", "attn", "o_proj", "kernel"): layer(
            a + "o_proj.weight", lambda w: w.T.reshape(h, dh, d), lambda k: k.reshape(h * dh, d).T),
        ("layers", "attn", "o_proj", "bias"): layer(a + "o_proj.bias"),
        ("layers", "attn", "q_norm", "scale"): layer(a + "q_norm.weight"),
        ("layers", "attn", "k_norm", "scale"): layer(a + "k_norm.weight"),
        ("layers", "attn_norm", "scale"): layer("input_layernorm.weight"),
        # Gemma 2 renamed the norms: its post_attention_layernorm is applied to the attention
        # output, and the pre-MLP norm is pre_feedforward_layernorm.
        ("layers", "mlp_norm", "scale"): layer("pre_feedforward_layernorm.weight" if cfg.post_norms
                                               else "post_attention_layernorm.weight"),
        ("layers", "post_attn_norm", "scale"): layer("post_attention_layernorm.weight"),
        ("layers", "post_mlp_norm", "scale"): layer("post_feedforward_layernorm.weight"),
        ("layers", "mlp", "gate_proj", "kernel"): layer("mlp.gate_proj.weight", transpose, transpose),
        ("layers", "mlp", "up_proj", "kernel"): layer("mlp.up_proj.weight", transpose, transpose),
        ("layers", "mlp", "down_proj", "kernel"): layer("mlp.down_proj.weight", transpose, transpose),
    }
    return out


def _path_keys(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _abstract_leaves(cfg: ModelConfig):
    """[(path keys, ShapeDtypeStruct)] of the rlx params of `cfg`, and their treedef."""
    from rlx.models.policy import Policy

    flat, treedef = jax.tree_util.tree_flatten_with_path(Policy(cfg).abstract_params())
    return [(_path_keys(p), leaf) for p, leaf in flat], treedef


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
    from rlx import sharding as rsh
    from rlx.models.policy import Policy

    cfg = config_from_hf(_read_json(path, "config.json"), **overrides)
    reader = SafetensorsDir(path)
    leaves, treedef = _abstract_leaves(cfg)
    if mesh is not None:
        specs = Policy(cfg).param_logical_specs()
        shardings = rsh.logical_to_sharding(specs, mesh, rsh.DEFAULT_RULES if rules is None
                                            else rules)
        flat_shardings = [s for _, s in jax.tree_util.tree_flatten_with_path(shardings)[0]]
    else:
        flat_shardings = [SingleDeviceSharding(jax.devices()[0])] * len(leaves)

    table = _leaf_map(cfg)
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

    table = _leaf_map(cfg)
    flat = {_path_keys(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    sources: dict[str, tuple[Any, int | None, _Leaf]] = {}
    specs = []
    for keys, leaf in _abstract_leaves(cfg)[0]:
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
    specs.sort(key=lambda s: _hf_order(s[0]))

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


def _hf_order(name: str) -> tuple:
    """Embedding, then layer by layer, then the final norm and head (how HF files are laid out)."""
    parts = name.split(".")
    if parts[:2] == ["model", "layers"]:
        return (1, int(parts[2]), name)
    return (0 if "embed_tokens" in name else 2, 0, name)


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
    leaves, treedef = _abstract_leaves(cfg)
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
