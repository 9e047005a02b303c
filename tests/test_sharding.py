"""Sharding: meshes from config, partitioned params, sharded forward == single-device forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlx
from rlx import sharding


def test_eight_fake_devices():
    assert jax.device_count() == 8


@pytest.mark.parametrize("shape,expected", [((-1, 1, 1), (8, 1, 1)), ((2, 2, 2), (2, 2, 2)),
                                            ((1, -1, 2), (1, 4, 2))])
def test_mesh_shapes(shape, expected):
    mesh = sharding.make_mesh(sharding.mesh_config(shape))
    assert tuple(mesh.shape.values()) == expected and mesh.axis_names == sharding.MESH_AXES
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


@pytest.mark.parametrize("shape,match", [((3, 1, 1), r"mesh.shape=\(3, 1, 1\) has 3 devices but 8"),
                                         ((3, -1, 1), r"8 is not divisible by 3"),
                                         ((-1, -1, 1), "at most one -1"),
                                         ((8, 1), "one size per axis")])
def test_mesh_errors_name_the_key(shape, match):
    with pytest.raises(ValueError, match=match):
        sharding.make_mesh(shape)


def test_bad_rule_names_the_axis():
    with pytest.raises(ValueError, match=r"names mesh axis 'model'.*allowed"):
        sharding.rules_from_config([("embed", "model")])


@pytest.fixture(scope="module")
def setup():
    cfg = rlx.models.preset("tiny")
    mesh = sharding.make_mesh((2, 2, 2))
    policy = rlx.models.Policy(cfg)
    sharded = rlx.models.Policy(cfg, mesh=mesh, rules=sharding.DEFAULT_RULES)
    params, shardings = sharding.init_sharded(sharded, jax.random.key(0), mesh)
    return policy, sharded, params, shardings, mesh


def test_params_are_partitioned_not_replicated(setup):
    policy, _, params, _, _ = setup
    layers = params["layers"]
    # [L, D, F]: embed over fsdp (2) x mlp over tensor (2) = 4 distinct pieces.
    assert sharding.num_shards(layers["mlp"]["up_proj"]["kernel"]) == 4
    assert sharding.num_shards(layers["attn"]["q_proj"]["kernel"]) == 4
    assert sharding.num_shards(params["embed"]["embedding"]) == 4
    assert sharding.num_shards(params["final_norm"]["scale"]) == 1
    # Same values as an unsharded (jitted) init with the same key.
    ref = jax.jit(policy.init)(jax.random.key(0))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sharded_forward_equals_single_device(setup):
    policy, sharded, params, _, mesh = setup
    toks = jax.random.randint(jax.random.key(1), (8, 16), 0, 512)
    ref_params = jax.device_get(params)
    ref = policy.logits(ref_params, toks)
    toks_s = jax.device_put(toks, sharding.batch_sharding(mesh))
    out = jax.jit(sharded.logits)(params, toks_s)
    assert sharding.num_shards(out) > 1
    np.testing.assert_allclose(out, ref, atol=1e-5)
    lp = jax.jit(sharded.token_logprobs)(params, toks_s)
    np.testing.assert_allclose(lp, policy.token_logprobs(ref_params, toks), atol=1e-5)


def test_sharded_cache_decode_equals_single_device(setup):
    policy, sharded, params, _, mesh = setup
    toks = jax.random.randint(jax.random.key(2), (8, 6), 0, 512)
    lengths = jnp.array([6, 3, 5, 1, 2, 6, 4, 4])
    ref, _ = policy.prefill(jax.device_get(params), toks, lengths, 8)
    specs = sharding.logical_to_sharding(sharded.cache_logical_specs(), mesh)
    cache = jax.jit(lambda: sharded.init_cache(8, 8), out_shardings=specs)()
    out, cache = jax.jit(sharded.extend)(params, cache, toks, lengths)
    assert sharding.num_shards(cache.k) == 8  # batch over data*fsdp (4) x kv heads over tensor (2)
    np.testing.assert_allclose(out, ref, atol=1e-5)


# -- sharded_jit --------------------------------------------------------------------------------

def _pieces(x) -> int:
    return sharding.num_shards(x)


def test_rows_specs_split_the_leading_axis_and_replicate_scalars():
    tree = {"tokens": jnp.zeros((8, 5)), "length": jnp.zeros((8,)), "steps": jnp.zeros(())}
    specs = sharding.rows_specs(tree)
    P = jax.sharding.PartitionSpec
    assert specs == {"tokens": P("act_batch", None), "length": P("act_batch"), "steps": P()}


def test_sharded_jit_places_inputs_and_outputs_by_their_specs():
    mesh = sharding.make_mesh((4, 1, 2))
    P = jax.sharding.PartitionSpec
    calls = []

    def fn(w, batch, scale):
        calls.append(1)   # counts traces
        return {"out": batch["x"] @ w * scale, "total": jnp.sum(batch["x"])}, w + 1

    f = sharding.sharded_jit(fn, mesh, in_specs=(P(None, "mlp"), sharding.ROWS, sharding.REPLICATED),
                             out_specs=(sharding.ROWS, P(None, "mlp")))
    w = jnp.arange(12.0).reshape(3, 4)
    x = jnp.arange(24.0).reshape(8, 3)
    out, w2 = f(w, {"x": x}, jnp.float32(2.0))
    # Numbers are those of the plain function; only the placement differs.
    np.testing.assert_allclose(out["out"], np.asarray(x) @ np.asarray(w) * 2)
    np.testing.assert_allclose(w2, np.asarray(w) + 1)
    assert _pieces(out["out"]) == 4          # rows over data (4); the 4 columns whole
    assert _pieces(out["total"]) == 1        # a scalar: replicated
    assert _pieces(w2) == 2                  # 'mlp' -> tensor (2)
    assert out["out"].sharding.spec == P(("data", "fsdp"), None)
    # Same structure and shapes: no new trace (the first call traced for the output's
    # structure and for jit); a new batch size: one more.
    traced = len(calls)
    f(w, {"x": x + 1}, jnp.float32(3.0))
    assert len(calls) == traced
    f(w, {"x": jnp.ones((16, 3))}, jnp.float32(1.0))
    assert len(calls) == traced + 1


def test_sharded_jit_spec_functions_and_donation():
    mesh = sharding.make_mesh((8, 1, 1))
    P = jax.sharding.PartitionSpec
    # A function of the value gives its specs: here a [L, B] "cache" whose batch is axis 1.
    state_specs = lambda st: {"cache": P(None, "act_batch"), "rows": sharding.rows_specs(st["rows"])}
    f = sharding.sharded_jit(lambda st: {"cache": st["cache"] * 2, "rows": st["rows"] + 1}, mesh,
                             in_specs=(state_specs,), out_specs=state_specs, donate_argnums=0)
    st = {"cache": jnp.ones((3, 8)), "rows": jnp.zeros((8,))}
    out = f(jax.device_put(st, sharding.resolve(state_specs, st, mesh)))
    assert out["cache"].sharding.spec == P(None, ("data", "fsdp"))
    assert _pieces(out["rows"]) == 8
    placed = jax.device_put(st, sharding.resolve(state_specs, st, mesh))
    f(placed)
    assert placed["cache"].is_deleted()      # donated


def test_sharded_jit_without_mesh_is_plain_jit_and_bad_roles_are_named():
    f = sharding.sharded_jit(lambda x: x * 2, None, in_specs=(sharding.ROWS,),
                             out_specs=sharding.ROWS)
    np.testing.assert_allclose(f(jnp.arange(3.0)), [0.0, 2.0, 4.0])
    mesh = sharding.make_mesh((8, 1, 1))
    g = sharding.sharded_jit(lambda x: x, mesh, in_specs=("rowz",), out_specs=sharding.ROWS)
    with pytest.raises(ValueError, match=r"sharding role 'rowz'; allowed: 'rows', 'replicated'"):
        g(jnp.zeros((8,)))
    with pytest.raises(TypeError, match="got 2 arguments; its in_specs describe 1"):
        g(jnp.zeros((8,)), jnp.zeros((8,)))


def test_check_rows_names_the_key():
    mesh = sharding.make_mesh((4, 1, 2))
    assert sharding.data_size(mesh) == 4 and sharding.data_size(None) == 1
    with pytest.raises(ValueError, match=r"rollout.batch_size=6 does not split over the mesh's "
                                         r"data axes \(size 4\); allowed: multiples of 4"):
        sharding.check_rows(mesh, None, 6, "rollout.batch_size")


def test_lower_gives_the_memory_per_device_of_the_sharded_program():
    """`ShardedJit.lower` on abstract arguments: XLA's memory analysis counts each device's shard
    (an [8, 1024] float32 batch split 8 ways is 4 KiB a device; replicated, 32 KiB)."""
    mesh = sharding.make_mesh((8, 1, 1))
    x = jax.ShapeDtypeStruct((8, 1024), jnp.float32)
    sizes = {}
    for role in (sharding.ROWS, sharding.REPLICATED):
        f = sharding.sharded_jit(lambda a: a * 2, mesh, in_specs=(role,), out_specs=role)
        sizes[role] = f.lower(x).compile().memory_analysis().argument_size_in_bytes
    assert sizes == {sharding.ROWS: 4 * 1024, sharding.REPLICATED: 8 * 4 * 1024}
