"""Shared fixtures of the rollout tests: the tiny float32 policy, built once per session."""

import jax
import pytest

import rlx


@pytest.fixture(scope="session")
def tiny():
    policy = rlx.models.Policy(rlx.models.preset("tiny"))
    params = jax.jit(policy.init)(jax.random.key(0))
    return policy, params
