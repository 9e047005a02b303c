"""The RL update step: it learns a trivially learnable task with GRPO, PPO (critic) and CISPO,
skips non-finite and zero-gradient steps, and runs sharded on 8 fake devices."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import rlx
from rlx import algos, sharding
from rlx.train.optim import make_optimizer, optim_section
from rlx.train.update import RLBatch, RLConfig, TrainState, make_update_step

TARGET = 3
B, G, NEW = 32, 8, 4


def _model():
    return rlx.models.preset("tiny", vocab_size=16, d_model=32, n_layers=1, n_heads=2,
                             n_kv_heads=1, head_dim=16, d_ff=64, max_len=16)


def _rl(**kw):
    rl = dict(loss="ppo", clip_low=0.2, clip_high=0.28, clip_c=3.0, epochs=1, num_minibatches=2)
    rl.update(kw)
    return RLConfig.from_config(ml_collections.ConfigDict(rl))


def _learn(loss: str, advantage: str, steps: int = 30):
    """Reward = fraction of the 4 sampled tokens equal to TARGET; returns the reward curve."""
    policy = rlx.models.Policy(_model())
    critic = rlx.models.Critic(_model()) if advantage == "gae" else None
    params = policy.init(jax.random.key(0))
    opt = make_optimizer(optim_section(lr=3e-3, b2=0.95))
    copt = make_optimizer(optim_section(lr=3e-3))
    cparams = critic.init(jax.random.key(1)) if critic else None
    state = TrainState.create(params, opt, cparams, copt if critic else None)
    kw = {"clip_low": 1.0, "clip_high": 0.2} if loss == "cispo" else {}
    update = jax.jit(make_update_step(policy, opt, _rl(loss=loss, **kw), critic,
                                      copt if critic else None))
    prompts = jnp.ones((B, 2), jnp.int32)
    group = jnp.arange(B) // G

    @jax.jit
    def rollout_and_batch(state, key):
        traj = rlx.rollout.sample(policy, state.params, prompts, key, max_new_tokens=NEW)
        mask = traj.policy_mask.astype(jnp.float32)
        reward = jnp.sum((traj.tokens == TARGET) * mask, -1) / NEW
        values = critic.values(state.critic_params, traj.tokens) if critic else None
        inputs = algos.AdvantageInputs(rewards=reward, mask=mask, group=group, values=values)
        adv, ret = algos.compute_advantages(advantage, inputs)
        lp = policy.token_logprobs(state.params, traj.tokens)
        batch = RLBatch(tokens=traj.tokens, policy_mask=mask, advantages=adv, old_logprobs=lp,
                        is_weights=jnp.ones_like(mask), ref_logprobs=lp, returns=ret,
                        old_values=jnp.zeros_like(mask) if values is None else values)
        return batch, jnp.mean(reward)

    curve = []
    for step in range(steps):
        k_roll, k_upd = jax.random.split(jax.random.fold_in(jax.random.key(7), step))
        batch, reward = rollout_and_batch(state, k_roll)
        state, metrics = update(state, batch, k_upd)
        assert int(metrics["skipped"]) == 0
        curve.append(float(reward))
    return np.array(curve)


@pytest.mark.parametrize("loss,advantage", [("ppo", "grpo"), ("cispo", "grpo"), ("ppo", "gae"),
                                            ("gspo", "rloo")])
def test_reward_rises_on_a_trivially_learnable_task(loss, advantage):
    curve = _learn(loss, advantage)
    # Chance is 1/16 per token. After 30 updates the policy emits the target most of the time.
    assert curve[:3].mean() < 0.2, curve
    assert curve[-5:].mean() > 0.6, curve


def _batch(tokens, adv):
    mask = jnp.ones(tokens.shape, jnp.float32).at[:, 0].set(0)
    zeros = jnp.zeros(tokens.shape, jnp.float32)
    return RLBatch(tokens=tokens, policy_mask=mask, advantages=adv, old_logprobs=zeros - 2.0,
                   is_weights=jnp.ones_like(mask), ref_logprobs=zeros, returns=zeros,
                   old_values=zeros)


def test_non_finite_and_zero_gradient_steps_move_nothing():
    policy = rlx.models.Policy(_model())
    params = policy.init(jax.random.key(0))
    opt = make_optimizer(optim_section(lr=1e-2))
    update = jax.jit(make_update_step(policy, opt, _rl(num_minibatches=1)))
    tokens = jax.random.randint(jax.random.key(1), (4, 6), 0, 16)
    adv = jnp.ones((4, 6)).at[2, 3].set(jnp.nan)  # one NaN poisons the loss
    state = TrainState.create(params, opt)
    new, metrics = update(state, _batch(tokens, adv), jax.random.key(2))
    assert int(new.skipped) == 1 and int(metrics["skipped"]) == 1
    assert not np.isfinite(float(metrics["loss"]))
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    # The optimizer state did not absorb the NaN either: a clean step afterwards is finite.
    new, metrics = update(new, _batch(tokens, jnp.ones((4, 6))), jax.random.key(3))
    assert int(new.skipped) == 1 and np.isfinite(float(metrics["loss"]))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new.params))
    assert any(not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(new.params), jax.tree.leaves(params), strict=True))
    # AdamW now has momentum. A batch without signal (all advantages zero) must leave the
    # parameters and optimizer state as they are, where plain optax would keep moving.
    state = new
    new, metrics = update(state, _batch(tokens, jnp.zeros((4, 6))), jax.random.key(4))
    assert float(metrics["grad_norm"]) == 0.0 and float(metrics["zero_grad"]) == 1.0
    assert int(new.skipped) == 1 and int(new.step) == int(state.step) + 1
    for a, b in zip(jax.tree.leaves((new.params, new.opt_state)),
                    jax.tree.leaves((state.params, state.opt_state)), strict=True):
        np.testing.assert_array_equal(a, b)
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    drift, _ = opt.update(zeros, state.opt_state, state.params)
    assert float(optax.tree.norm(drift)) > 0  # what optax alone would have applied


def test_epochs_and_minibatches_count_updates():
    policy = rlx.models.Policy(_model())
    params = policy.init(jax.random.key(0))
    opt = make_optimizer(optim_section(lr=1e-3))
    update = jax.jit(make_update_step(policy, opt, _rl(epochs=3, num_minibatches=4)))
    tokens = jax.random.randint(jax.random.key(1), (8, 6), 0, 16)
    state, _ = update(TrainState.create(params, opt), _batch(tokens, jnp.ones((8, 6))),
                      jax.random.key(0))
    assert int(state.step) == 12


def test_one_minibatch_one_epoch_equals_a_hand_written_step():
    """The scanned update equals optax applied to the gradient of the published PPO loss."""
    policy = rlx.models.Policy(_model())
    params = policy.init(jax.random.key(0))
    # SGD keeps the comparison linear in the gradient (Adam's first step divides by |g| + eps).
    opt = make_optimizer(optim_section(name="sgd", lr=1e-1, grad_clip=0.0))
    cfg = _rl(num_minibatches=1, clip_c=0.0)
    tokens = jax.random.randint(jax.random.key(1), (4, 6), 0, 16)
    adv = jax.random.normal(jax.random.key(2), (4, 6))
    batch = _batch(tokens, adv)
    new, _ = jax.jit(make_update_step(policy, opt, cfg))(TrainState.create(params, opt), batch,
                                                          jax.random.key(0))

    def loss(p):
        lp = policy.token_logprobs(p, tokens)
        r = jnp.exp(lp - batch.old_logprobs)
        per = jnp.maximum(-adv * r, -adv * jnp.clip(r, 0.8, 1.28))
        return jnp.sum(per * batch.policy_mask) / jnp.sum(batch.policy_mask)

    grads = jax.grad(loss)(params)
    upd, _ = opt.update(grads, opt.init(params), params)
    ref = jax.tree.map(lambda p, u: p + u, params, upd)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_sharded_update_matches_single_device():
    mesh = sharding.make_mesh((2, 2, 2))
    cfg = rlx.models.preset("tiny", vocab_size=16, d_model=32, n_layers=1, n_heads=2,
                            n_kv_heads=2, head_dim=16, d_ff=64)
    policy = rlx.models.Policy(cfg)
    spolicy = rlx.models.Policy(cfg, mesh=mesh, rules=sharding.DEFAULT_RULES)
    params, shardings = sharding.init_sharded(spolicy, jax.random.key(0), mesh)
    opt = make_optimizer(optim_section(name="sgd", lr=1e-1))
    tokens = jax.random.randint(jax.random.key(1), (8, 6), 0, 16)
    batch = _batch(tokens, jax.random.normal(jax.random.key(2), (8, 6)))
    ref, _ = jax.jit(make_update_step(policy, opt, _rl()))(
        TrainState.create(jax.device_get(params), opt), batch, jax.random.key(0))
    rows = sharding.batch_sharding(mesh)
    sbatch = jax.tree.map(lambda x: jax.device_put(x, rows), batch)
    out, _ = jax.jit(make_update_step(spolicy, opt, _rl()), donate_argnums=0)(
        TrainState.create(params, opt), sbatch, jax.random.key(0))
    assert sharding.num_shards(out.params["layers"]["mlp"]["up_proj"]["kernel"]) == 4
    for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(ref.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_update_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"rl.loss='trpo' is not allowed; allowed: \['cispo'"):
        _rl(loss="trpo")
    with pytest.raises(ValueError, match=r"rl.loss_agg_mode='mean'"):
        _rl(loss_agg_mode="mean")
    with pytest.raises(ValueError, match=r"rl.correction.level='batch' is not allowed; "
                                         r"allowed: \['token', 'sequence'\]"):
        _rl(correction=ml_collections.ConfigDict(dict(mode="tis", level="batch")))
    with pytest.raises(ValueError, match=r"rl.advantage='gae2' is not allowed; allowed: \["):
        _rl(advantage="gae2")


def test_rl_config_reads_every_rl_setting_once():
    cfg = _rl(advantage="gae", advantage_kwargs=ml_collections.ConfigDict(dict(lam=0.9,
                                                                              gamma=1.0)),
              correction=ml_collections.ConfigDict(dict(mode="mis", level="sequence",
                                                        threshold=3.0)),
              temperature=0.0, kl_reward_coef=0.1)
    assert cfg.advantage_kwargs == (("gamma", 1.0), ("lam", 0.9))
    assert (cfg.correction_mode, cfg.correction_level, cfg.correction_threshold) == (
        "mis", "sequence", 3.0)
    assert cfg.temperature == 1.0 and cfg.kl_reward_coef == 0.1   # greedy: untempered
    hash(cfg)   # a static argument of the jitted stages


def test_adamw_moments_are_sharded_like_their_params():
    """Under fsdp the optimizer state must split like the parameters; replicated moments would
    keep 2/3 of the train state whole on every device (bench_memory found it so)."""
    from rlx.train import setup as setup_lib
    from rlx.train.step import RL, Run
    from tests.train.test_loop import small_config

    run = Run(setup_lib.build(small_config(**{"mesh.shape": (1, 8, 1)})))
    train = run.abstract_state(RL)["train"]
    pairs = []
    optax.tree_map_params(run.rl_opt, lambda m, p: pairs.append((m.sharding, p.sharding)),
                          train.opt_state, train.params, transform_non_params=lambda x: x)
    assert len(pairs) == 2 * len(jax.tree.leaves(train.params))   # AdamW's mu and nu
    assert all(m == p for m, p in pairs)
    assert any("fsdp" in str(p.spec) for _, p in pairs)
