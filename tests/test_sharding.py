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
