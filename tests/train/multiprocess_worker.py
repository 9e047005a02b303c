"""Two RL steps of a small config, with a checkpoint written and restored in between: run in one
process by the test (8 devices) and as `python tests/train/multiprocess_worker.py <process id>
<processes> <port> <out>` in each of several processes sharing 8 CPU devices
(tests/train/test_multiprocess.py)."""

from __future__ import annotations

import json
import os
import sys

# A small model from random init; the entropy term gives every step a gradient even where no
# group's rewards differ.
OVERRIDES = {
    "model.n_layers": 1, "model.d_model": 32, "model.n_heads": 2, "model.n_kv_heads": 1,
    "model.head_dim": 16, "model.d_ff": 64,
    "rl.num_minibatches": 2, "rl.entropy_coef": 0.01,
    "rollout.batch_size": 8, "rollout.group_size": 4, "rollout.max_new_tokens": 12,
    "rollout.max_rounds": 2, "rollout.max_len": 384,
    "eval.num_episodes": 8, "eval.pass_k": 0, "eval.pass_k_tasks": 0,
}
STEPS = 2


def config(overrides: dict | None = None):
    """The scratch config of configs/toolcalc_grpo.py with `overrides` (default: OVERRIDES)."""
    from configs import toolcalc_grpo
    c = toolcalc_grpo.get_config("scratch")
    c.update_from_flattened_dict(OVERRIDES if overrides is None else overrides)
    return c


def train(checkpoint_dir: str) -> tuple[list[dict], list]:
    """(metrics of each step, the final params as numpy leaves, gathered to every process).
    After step 1 the state is saved, restored into fresh shardings, checked equal, and the run
    goes on from the restored copy."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import multihost_utils

    from rlx.train import setup as setup_lib
    from rlx.train.checkpoint import Checkpointer
    from rlx.train.step import RL, Run, run_keys
    from rlx.train.update import TrainState

    c = config()
    s = setup_lib.build(c)
    run = Run(s)
    keys = run_keys(c)
    params = run.init_params(keys["init"])
    state = jax.device_put(
        {"train": TrainState.create(params, run.rl_opt, None, run.critic_opt),
         "ref": jax.jit(lambda p: jax.tree.map(jnp.copy, p))(params)}, run.state_sh[RL])

    def gather(tree):
        return [np.asarray(x) for x in
                jax.tree.leaves(multihost_utils.process_allgather(tree, tiled=True))]

    metrics = []
    for step in range(STEPS):
        state, m = run.rl_step(state, jax.random.fold_in(keys["rl"], step))
        metrics.append({k: float(v) for k, v in jax.device_get(m).items()
                        if np.size(v) == 1 and not k.startswith("time") and "per_s" not in k
                        and k != "compiles"})
        if step == 0:
            ckpt = Checkpointer(checkpoint_dir)
            ckpt.save(1, state, {"stage": RL, "rl_step": 1})
            restored, meta = ckpt.restore(1, run.abstract_state(RL))
            ckpt.close()
            assert meta["rl_step"] == 1, meta
            for a, b in zip(gather(state), gather(restored), strict=True):
                np.testing.assert_array_equal(a, b)
            state = restored
    return metrics, gather(state["train"].params)


def main(argv: list[str]) -> None:
    process_id, processes, port, out = int(argv[1]), int(argv[2]), argv[3], argv[4]
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // processes}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__)))))
    from rlx import sharding
    sharding.init_distributed(f"127.0.0.1:{port}", processes, process_id)
    import jax
    import numpy as np
    assert jax.device_count() == 8 and jax.local_device_count() == 8 // processes
    metrics, params = train(os.path.join(out, "checkpoints"))
    if process_id == 0:
        np.savez(os.path.join(out, "params.npz"), *params)
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(metrics, f)


if __name__ == "__main__":
    main(sys.argv)
