"""Compiling rollout stages once per shape with explicit shardings and donation.

With a mesh on the policy (`Policy(cfg, mesh=..., rules=...)`), parameters follow their logical
shardings, every array with a leading batch axis is split over the data axes ('act_batch'), the
KV cache follows `Policy.cache_logical_specs`, and scalars are replicated. Without a mesh the
stages are plain `jax.jit`s. Compiled functions are cached by (stage, policy, static options,
input shapes), so a training loop compiles each stage once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

from rlx import sharding as shd

_CACHE: dict[Hashable, tuple[Callable, Any]] = {}
_MAX_ENTRIES = 64


def _mesh_rules(policy):
    mesh = getattr(policy, "mesh", None)
    rules = getattr(policy, "rules", None) or shd.DEFAULT_RULES
    return mesh, rules


def check_batch(policy, batch: int) -> None:
    """The batch must split evenly over the mesh's data axes."""
    mesh, rules = _mesh_rules(policy)
    if mesh is None:
        return
    spec = shd.batch_sharding(mesh, 1, rules).spec[0]
    axes = () if spec is None else (spec if isinstance(spec, tuple) else (spec,))
    n = math.prod(mesh.shape[a] for a in axes)
    if batch % n:
        raise ValueError(f"rollout batch size {batch} does not split over the mesh data axes "
                         f"{axes} of size {n}; allowed: multiples of {n}")


def tree_shardings(policy, tree: Any, batch: int) -> Any:
    """Shardings for a pytree of (abstract) arrays: KV caches [L,B,S,H,D] by the cache specs,
    arrays with a leading batch axis over the data axes, everything else replicated."""
    mesh, rules = _mesh_rules(policy)
    cache_sh = shd.logical_to_sharding(policy.cache_logical_specs().k, mesh, rules)

    def leaf(x):
        shape = getattr(x, "shape", ())
        if len(shape) == 5 and shape[1] == batch:
            return cache_sh
        if len(shape) >= 1 and shape[0] == batch:
            return shd.batch_sharding(mesh, len(shape), rules)
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(leaf, tree)


def param_shardings(policy) -> Any:
    mesh, rules = _mesh_rules(policy)
    return shd.logical_to_sharding(policy.param_logical_specs(), mesh, rules)


def _signature(args: tuple) -> Hashable:
    leaves, treedef = jax.tree.flatten(args)
    return treedef, tuple((getattr(x, "shape", ()), str(getattr(x, "dtype", type(x))))
                          for x in leaves)


def call(stage: str, fn: Callable, policy, static: Hashable, args: tuple, *, batch: int,
         param_argnum: int | None = 0, replicated_argnums: tuple[int, ...] = (),
         donate_argnums: tuple[int, ...] = ()) -> Any:
    """Runs `fn(*args)` compiled for these shapes. `args[param_argnum]` are the policy's
    parameters (sharded by their logical specs); every other argument and the output are
    sharded by `tree_shardings`, except those in `replicated_argnums` (e.g. env params, whose
    tables must not be mistaken for batch arrays). Arguments in `donate_argnums` are donated."""
    key = (stage, policy, static, _signature(args), replicated_argnums, donate_argnums)
    if key not in _CACHE:
        mesh, _ = _mesh_rules(policy)
        if mesh is None:
            compiled = jax.jit(fn, donate_argnums=donate_argnums)
        else:
            rep = NamedSharding(mesh, PartitionSpec())
            in_sh = tuple(
                param_shardings(policy) if i == param_argnum
                else jax.tree.map(lambda _: rep, a) if i in replicated_argnums
                else tree_shardings(policy, a, batch)
                for i, a in enumerate(args))
            out_sh = tree_shardings(policy, jax.eval_shape(fn, *args), batch)
            compiled = jax.jit(fn, in_shardings=in_sh, out_shardings=out_sh,
                               donate_argnums=donate_argnums)
        if len(_CACHE) >= _MAX_ENTRIES:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = (compiled, None if mesh is None else in_sh)
    compiled, in_sh = _CACHE[key]
    if in_sh is not None:
        # Arrays already placed as required pass through untouched (donation still applies);
        # others (e.g. parameters from an unsharded init) are moved once here.
        args = jax.device_put(args, in_sh)
    return compiled(*args)
