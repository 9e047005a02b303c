"""Shared fixtures of the rollout tests: the tiny float32 policy, built once per session."""

import jax
import pytest

import rlx


@pytest.fixture(scope="session")
def tiny():
    # The scripted envs here have their own token ids; 512 ids keep the sampled stop rates the
    # layout tests were written for (every finish reason occurs).
    policy = rlx.models.Policy(rlx.models.preset("tiny", vocab_size=512))
    params = jax.jit(policy.init)(jax.random.key(0))
    return policy, params
