"""Meshes, logical-axis rules and sharded initialization.

The mesh has axes ('data', 'fsdp', 'tensor'); a config gives their sizes, with -1 meaning "the rest
of the devices". Parameters and activations carry logical axis names; one rules table maps them to
mesh axes, so scaling from one CPU to a pod is a config change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axes. Parameters: 'embed' is split over fsdp, the wide dimensions over
# tensor. Activations ('act_*') keep the batch on the data axes.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("layers", None),
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_length", None),
)


def mesh_config(shape: Sequence[int] = (-1, 1, 1)) -> ml_collections.ConfigDict:
    """The `mesh` section of an experiment config: sizes of ('data', 'fsdp', 'tensor')."""
    return ml_collections.ConfigDict({"shape": tuple(shape), "axes": MESH_AXES})


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Fills the single -1 in `shape` so the product equals `num_devices`; errors name mesh.shape."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"mesh.shape={shape} must give one size per axis {MESH_AXES}")
    if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh.shape={shape}: sizes must be positive, with at most one -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ValueError(f"mesh.shape={shape} does not fit {num_devices} devices: "
                             f"{num_devices} is not divisible by {known}")
        shape = tuple(num_devices // known if s == -1 else s for s in shape)
    if math.prod(shape) != num_devices:
        raise ValueError(f"mesh.shape={shape} has {math.prod(shape)} devices but "
                         f"{num_devices} are available; allowed: shapes whose product is "
                         f"{num_devices} (use -1 for 'the rest')")
    return shape


def make_mesh(cfg: ml_collections.ConfigDict | Sequence[int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds the ('data','fsdp','tensor') mesh with Auto axis types (what Linen's logical
    constraints need; jax 0.10 defaults to Explicit)."""
    if cfg is None:
        shape: Sequence[int] = (-1, 1, 1)
    elif isinstance(cfg, ml_collections.ConfigDict):
        shape = cfg.shape
    else:
        shape = cfg
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(shape, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def rules_from_config(rules: Any | None) -> tuple[tuple[str, Any], ...]:
    """Rules as a hashable tuple; None gives `DEFAULT_RULES`. Checks mesh axis names."""
    if rules is None:
        return DEFAULT_RULES
    out = []
    for item in rules:
        name, axes = item
        axes_t = axes if isinstance(axes, (tuple, list)) else (axes,)
        for a in axes_t:
            if a is not None and a not in MESH_AXES:
                raise ValueError(f"sharding rule {name!r} -> {axes!r} names mesh axis {a!r}; "
                                 f"allowed: {MESH_AXES} or None")
        out.append((str(name), tuple(axes) if isinstance(axes, list) else axes))
    return tuple(out)


def logical_to_sharding(specs: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
    """Pytree of logical PartitionSpecs -> pytree of NamedShardings on `mesh`."""
    return nn.logical_to_mesh_sharding(specs, mesh, list(rules))


def batch_sharding(mesh: Mesh, ndim: int = 2, rules=DEFAULT_RULES) -> NamedSharding:
    """Sharding of a [B, ...] batch array: batch over the data axes, the rest replicated."""
    return logical_to_sharding(PartitionSpec("act_batch", *([None] * (ndim - 1))), mesh, rules)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def init_sharded(policy, key: jax.Array, mesh: Mesh, rules=DEFAULT_RULES):
    """Initializes `policy` parameters directly into their shardings:
    eval_shape -> logical specs -> jit(init, out_shardings=...). Returns (params, shardings)."""
    shardings = logical_to_sharding(policy.param_logical_specs(), mesh, rules)
    params = jax.jit(policy.init, out_shardings=shardings)(key)
    return params, shardings


def num_shards(x: jax.Array) -> int:
    """How many distinct pieces `x` is split into (1 = replicated)."""
    return len({tuple((s.start, s.stop) for s in idx)
                for idx in x.sharding.devices_indices_map(x.shape).values()
                if idx is not None}) if hasattr(x, "sharding") else 1


def describe(tree: Any) -> dict[str, str]:
    """Human-readable shardings of a pytree, keyed by path (for logs and tests)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): str(getattr(v, "sharding", None)) for p, v in flat}


__all__ = ["DEFAULT_RULES", "MESH_AXES", "batch_sharding", "describe", "init_sharded",
           "logical_to_sharding", "make_mesh", "mesh_config", "num_shards", "replicated",
           "resolve_mesh_shape", "rules_from_config"]

