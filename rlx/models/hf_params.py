"""rlx parameter tree <-> Hugging Face tensor names and layouts.

`leaf_map(cfg)` says, for every rlx parameter, which Hugging Face tensor holds it (one per layer
for the parameters stacked over layers by `nn.scan`) and how to turn one into the other: HF keeps
projections as [out, in] matrices, rlx as [in, heads, head_dim] kernels. The conversions return
numpy views, so `rlx.models.hf.load` can cut device shards straight out of memory-mapped tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np

from rlx.models.config import ModelConfig
from rlx.models.policy import Policy


@dataclasses.dataclass(frozen=True)
class Leaf:
    """How one rlx parameter maps to Hugging Face tensors.

    `name`: the HF tensor name (with `{i}` for the layer of a stacked parameter). `to_rlx` turns
    an HF tensor (a numpy view) into the rlx layout of one layer, as a view; `to_hf` inverts it.
    """

    name: str
    layered: bool
    to_rlx: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def leaf_map(cfg: ModelConfig) -> dict[tuple[str, ...], Leaf]:
    """The `Leaf` of every rlx parameter of `cfg`, keyed by its path in the params tree."""
    d, h, kv, dh = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    ident = lambda x: x  # noqa: E731
    transpose = lambda x: x.T  # noqa: E731

    def layer(name, to_rlx=ident, to_hf=ident):
        return Leaf("model.layers.{i}." + name, True, to_rlx, to_hf)

    def proj_in(heads):  # HF [heads*dh, d] <-> rlx [d, heads, dh]
        return (lambda w: w.T.reshape(d, heads, dh), lambda k: k.reshape(d, heads * dh).T)

    def bias(heads):  # HF [heads*dh] <-> rlx [heads, dh]
        return (lambda b: b.reshape(heads, dh), lambda b: b.reshape(heads * dh))

    a = "self_attn."
    out = {
        ("embed", "embedding"): Leaf("model.embed_tokens.weight", False, ident, ident),
        ("final_norm", "scale"): Leaf("model.norm.weight", False, ident, ident),
        ("lm_head",): Leaf("lm_head.weight", False, transpose, transpose),
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


def path_keys(path) -> tuple[str, ...]:
    """The string keys of a `jax.tree_util` key path, e.g. ("layers", "attn", "q_proj", "kernel")."""
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def abstract_leaves(cfg: ModelConfig):
    """[(path keys, ShapeDtypeStruct)] of the rlx params of `cfg`, and their treedef."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(Policy(cfg).abstract_params())
    return [(path_keys(p), leaf) for p, leaf in flat], treedef


def hf_order(name: str) -> tuple:
    """Embedding, then layer by layer, then the final norm and head (how HF files are laid out)."""
    parts = name.split(".")
    if parts[:2] == ["model", "layers"]:
        return (1, int(parts[2]), name)
    return (0 if "embed_tokens" in name else 2, 0, name)


__all__ = ["Leaf", "abstract_leaves", "hf_order", "leaf_map", "path_keys"]
