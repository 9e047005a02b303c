"""Meshes, logical-axis rules, and the one way rlx compiles: `sharded_jit`.

The mesh has axes ('data', 'fsdp', 'tensor'); a config gives their sizes, with -1 meaning "the rest
of the devices". Parameters and activations carry logical axis names; one rules table maps them to
mesh axes, so scaling from one CPU to a pod is a config change.

Every compiled stage of rlx (sampling, episodes, the trainer's steps) is a `sharded_jit`: its
inputs and outputs are described by logical specs (or by the roles `ROWS` and `REPLICATED`), turned
into shardings on the mesh once per argument structure, and the arguments are placed on them
before the call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec, Sharding

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


def init_distributed(coordinator: str, num_processes: int | None = None,
                     process_id: int | None = None) -> None:
    """Joins a run of several processes (`jax.distributed.initialize`); call it before any JAX
    computation. Every process runs the same program on the global mesh (all processes'
    devices); on CPU, collectives between processes go through gloo. `coordinator="auto"` lets
    JAX find the coordinator, process count and index itself (TPU pod slices, SLURM jobs; see
    docs/scale.md); otherwise give "host:port" of process 0 and both numbers."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU only; else unused
    if coordinator == "auto":
        jax.distributed.initialize()
        return
    if num_processes is None or process_id is None or not 0 <= process_id < num_processes:
        raise ValueError(f"coordinator={coordinator!r} needs num_processes >= 1 and "
                         f"0 <= process_id < num_processes; got {num_processes}, {process_id}")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def is_lead() -> bool:
    """True in the process that writes files and prints (process 0; the only one by default)."""
    return jax.process_index() == 0


def to_host(tree: Any) -> Any:
    """Every leaf of `tree` whole, as numpy, in this process: `jax.device_get` in a single process,
    an all-gather across processes otherwise (then every process must call it)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)


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


def data_size(mesh: Mesh | None, rules=DEFAULT_RULES) -> int:
    """How many ways a batch is split: the product of the mesh axes 'act_batch' maps to."""
    if mesh is None:
        return 1
    spec = batch_sharding(mesh, 1, rules).spec[0]
    axes = () if spec is None else (spec if isinstance(spec, tuple) else (spec,))
    return math.prod(mesh.shape[a] for a in axes)


def check_rows(mesh: Mesh | None, rules, rows: int, what: str) -> None:
    """`rows` must split evenly over the data axes; the error names `what` (a config key)."""
    n = data_size(mesh, rules or DEFAULT_RULES)
    if rows % n:
        raise ValueError(f"{what}={rows} does not split over the mesh's data axes (size {n}); "
                         f"allowed: multiples of {n}")


# -- sharded_jit: one way to compile ----------------------------------------------------------------

ROWS = "rows"              # a batch-major pytree: [B, ...] leaves over 'act_batch', scalars replicated
REPLICATED = "replicated"  # every leaf whole on every device


def rows_specs(tree: Any) -> Any:
    """The logical specs `ROWS` stands for: [B, ...] leaves split over 'act_batch', scalars
    replicated."""
    def spec(x):
        ndim = len(getattr(x, "shape", ()))
        return PartitionSpec("act_batch", *([None] * (ndim - 1))) if ndim else PartitionSpec()
    return jax.tree.map(spec, tree)


def _is_spec(x: Any) -> bool:
    return isinstance(x, (str, PartitionSpec, Sharding)) or callable(x)


def resolve(spec: Any, value: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
    """The sharding of every leaf of `value` (arrays or `jax.ShapeDtypeStruct`s) under `spec`.

    `spec` is a pytree prefix of `value` whose leaves are logical `PartitionSpec`s, `Sharding`s,
    `ROWS`, `REPLICATED`, or functions of the matching subtree of `value` returning a spec (for
    a structure with fields of different kinds, e.g. a rollout state's KV cache and its rows).
    A leaf of `spec` covers the whole subtree of `value` it matches."""
    def one(s, v):
        if isinstance(s, str):
            if s not in (ROWS, REPLICATED):
                raise ValueError(f"sharding role {s!r}; allowed: {ROWS!r}, {REPLICATED!r}")
            s = rows_specs(v) if s == ROWS else PartitionSpec()
            return resolve(s, v, mesh, rules)
        if isinstance(s, PartitionSpec):
            s = logical_to_sharding(s, mesh, rules)
        elif not isinstance(s, Sharding):   # a function of the value
            return resolve(s(v), v, mesh, rules)
        return jax.tree.map(lambda _: s, v)
    return jax.tree.map(one, spec, value, is_leaf=_is_spec)


class ShardedJit:
    """`fn` under `jax.jit` with explicit in/out shardings; see `sharded_jit`."""

    def __init__(self, fn, mesh, rules, in_specs, out_specs, donate_argnums):
        self.fn, self.mesh, self.rules = fn, mesh, rules or DEFAULT_RULES
        self.in_specs, self.out_specs = tuple(in_specs), out_specs
        self.donate_argnums = donate_argnums
        self._plain = jax.jit(fn, donate_argnums=donate_argnums) if mesh is None else None
        self._by_structure: dict[Any, tuple[Any, Any]] = {}

    def _jitted(self, args: tuple) -> tuple[Any, Any]:
        """(the `jax.jit` of this argument structure, its input shardings)."""
        leaves, treedef = jax.tree.flatten(args)
        structure = (treedef, tuple(len(getattr(x, "shape", ())) for x in leaves))
        if structure not in self._by_structure:
            if len(args) != len(self.in_specs):
                raise TypeError(f"{getattr(self.fn, '__name__', self.fn)} got {len(args)} "
                                f"arguments; its in_specs describe {len(self.in_specs)}")
            in_sh = resolve(self.in_specs, args, self.mesh, self.rules)
            out_sh = resolve(self.out_specs, jax.eval_shape(self.fn, *args), self.mesh,
                             self.rules)
            jitted = jax.jit(self.fn, in_shardings=in_sh, out_shardings=out_sh,
                             donate_argnums=self.donate_argnums)
            self._by_structure[structure] = (jitted, in_sh)
        return self._by_structure[structure]

    def __call__(self, *args):
        if self._plain is not None:
            return self._plain(*args)
        jitted, in_sh = self._jitted(args)
        # Arrays already placed as required pass through untouched (donation still applies);
        # others (e.g. parameters from an unsharded init) are moved here.
        return jitted(*jax.tree.map(put, args, in_sh))

    def lower(self, *args):
        """`jax.jit(...).lower` for these (possibly abstract, `jax.ShapeDtypeStruct`) arguments:
        `.compile().memory_analysis()` gives the stage's memory per device without running it."""
        if self._plain is not None:
            return self._plain.lower(*args)
        return self._jitted(args)[0].lower(*args)


def put(x: Any, sharding: Sharding) -> Any:
    """`jax.device_put(x, sharding)`, also for a PRNG key that every process holds whole
    going to devices of several processes (`device_put` takes only plain arrays there)."""
    if (jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)
            and not sharding.is_fully_addressable and x.is_fully_addressable):
        spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec) + 1)
        data = jax.device_put(np.asarray(jax.random.key_data(x)),
                              NamedSharding(sharding.mesh, PartitionSpec(*spec)))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    return jax.device_put(x, sharding)


def sharded_jit(fn, mesh: Mesh | None, rules=None, *, in_specs: Sequence[Any], out_specs: Any,
                donate_argnums: int | tuple[int, ...] = ()) -> ShardedJit:
    """`fn` compiled with the shardings its specs give on `mesh` (see `resolve`): one spec per
    positional argument in `in_specs`, one (a pytree prefix of the output) in `out_specs`.

    Shardings are resolved at the first call of each argument structure (pytree and ranks);
    `jax.jit` then compiles once per shape as usual. Arguments are placed on their shardings
    before each call, and those in `donate_argnums` are donated. Without a mesh it is a plain
    `jax.jit`. Cache a `ShardedJit` by what its `fn` closes over (see `rlx.rollout.sampler`),
    not per call."""
    return ShardedJit(fn, mesh, rules, in_specs, out_specs, donate_argnums)


def init_sharded(policy, key: jax.Array, mesh: Mesh, rules=DEFAULT_RULES):
    """Initializes `policy` parameters directly into their shardings:
    eval_shape -> logical specs -> jit(init, out_shardings=...). Returns (params, shardings)."""
    specs = policy.param_logical_specs()
    init = sharded_jit(policy.init, mesh, rules, in_specs=(REPLICATED,), out_specs=specs)
    params = init(key)
    return params, jax.tree.map(lambda x: x.sharding, params)


def num_shards(x: jax.Array) -> int:
    """How many distinct pieces `x` is split into (1 = replicated)."""
    return len({tuple((s.start, s.stop) for s in idx)
                for idx in x.sharding.devices_indices_map(x.shape).values()
                if idx is not None}) if hasattr(x, "sharding") else 1


def describe(tree: Any) -> dict[str, str]:
    """Human-readable shardings of a pytree, keyed by path (for logs and tests)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): str(getattr(v, "sharding", None)) for p, v in flat}


__all__ = ["DEFAULT_RULES", "MESH_AXES", "REPLICATED", "ROWS", "ShardedJit", "batch_sharding",
           "check_rows", "data_size", "describe", "init_distributed", "init_sharded", "is_lead",
           "logical_to_sharding", "make_mesh", "mesh_config", "num_shards", "replicated", "resolve",
           "resolve_mesh_shape", "rows_specs", "rules_from_config", "sharded_jit", "to_host"]
