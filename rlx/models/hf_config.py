"""Hugging Face `config.json` <-> rlx `ModelConfig`, and the families rlx reads and writes.

Families: Llama (incl. 3.x rope scaling), Qwen2/2.5, Qwen3, Gemma and Gemma 2 (`FAMILIES`).
`config_from_hf` maps a `config.json` onto `ModelConfig` fields (biases, q/k norm, tied
embeddings, GQA, rope theta and scaling, Gemma's embedding scale and (1 + w) norms, Gemma 2's
soft-capping, query scalar, sliding-window layers and post-norms); anything that would change the
computation and that rlx does not implement is refused with a message naming it. `config_to_hf`
is the inverse for one family, refusing a config the family cannot represent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rlx.models.config import DTYPES, ROPE_TYPES, ModelConfig

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


__all__ = ["ARCHITECTURES", "FAMILIES", "config_from_hf", "config_to_hf", "infer_family"]
