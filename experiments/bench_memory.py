"""Memory per device of the RL update and of the log-prob pass (`prepare`), from XLA's compiled
memory analysis: the stages are lowered on abstract arrays and compiled, never run, so the figures
hold for shapes far larger than this machine could execute.

    python -m experiments.bench_memory                               # tiny, small, base; 3 meshes
    python -m experiments.bench_memory --presets=base --meshes=8x1x1,1x8x1 --batch=64 --length=512

Each row: the preset and mesh, then per device the arguments (train state and batch: parameters,
AdamW moments, the reference), the temporaries (activations kept for the backward pass, logits
chunks) and the total XLA reports, for one `rl.num_minibatches` split of a [batch, length] RL
batch. With 8 fake CPU devices (the default here) it models an 8-chip slice; the fsdp axis divides
the state, the data axis the activations.
"""

from __future__ import annotations

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from configs import toolcalc_grpo  # noqa: E402
from rlx.rollout.trajectory import Trajectory  # noqa: E402
from rlx.train import setup as setup_lib  # noqa: E402
from rlx.train.step import RL, Run  # noqa: E402
from rlx.train.update import RLBatch  # noqa: E402

_PRESETS = flags.DEFINE_list("presets", "tiny,small,base", "Model presets.")
_MESHES = flags.DEFINE_list("meshes", "8x1x1,1x8x1,2x2x2", "Meshes DATAxFSDPxTENSOR.")
_BATCH = flags.DEFINE_integer("batch", 64, "RL batch rows (rollout.batch_size).")
_LENGTH = flags.DEFINE_integer("length", 512, "Row length (rollout.max_len).")
_MINIBATCHES = flags.DEFINE_integer("minibatches", 2, "rl.num_minibatches.")

GB = 1e9


def stage_memory(preset: str, mesh: str, batch: int, length: int, minibatches: int
                 ) -> dict[str, dict[str, float]]:
    """{stage: {arguments, temporaries, outputs, total} in GB per device} of `prepare` and
    `update_step` for a [batch, length] RL batch of the default config at this preset and
    mesh."""
    config = toolcalc_grpo.get_config(f"model={preset},mesh={mesh}")
    config.unlock()
    config.rollout.batch_size, config.rollout.max_len = batch, length
    config.rl.num_minibatches = minibatches
    config.sft.max_len = length
    config.lock()
    s = setup_lib.build(config)
    run = Run(s)
    state = run.abstract_state(RL)
    rows = jax.ShapeDtypeStruct((batch, length), jnp.float32)
    tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    key = jax.eval_shape(lambda: jax.random.key(0))
    batch_in = RLBatch(tokens=tokens, policy_mask=rows, advantages=rows, old_logprobs=rows,
                       is_weights=rows, ref_logprobs=rows, returns=rows, old_values=rows)
    traj = jax.eval_shape(lambda: _abstract_trajectory(batch, length))
    reward = jax.ShapeDtypeStruct((batch,), jnp.float32)
    lowered = {
        "prepare": run.prepare.lower(state["train"].params, state["ref"], None, traj, reward),
        "update": run.update_step.lower(state["train"], batch_in, key),
    }
    out = {}
    for name, low in lowered.items():
        m = low.compile().memory_analysis()
        parts = dict(arguments=m.argument_size_in_bytes, temporaries=m.temp_size_in_bytes,
                     outputs=m.output_size_in_bytes - m.alias_size_in_bytes)
        out[name] = {k: v / GB for k, v in parts.items()} | {"total": sum(parts.values()) / GB}
    return out


def _abstract_trajectory(batch: int, length: int) -> Trajectory:
    zeros_i = jnp.zeros((batch,), jnp.int32)
    return Trajectory(tokens=jnp.zeros((batch, length), jnp.int32),
                      policy_mask=jnp.zeros((batch, length), bool),
                      rollout_logprobs=jnp.zeros((batch, length), jnp.float32),
                      length=zeros_i, prompt_length=zeros_i, finish_reason=zeros_i,
                      truncated=jnp.zeros((batch,), bool), rounds=zeros_i, tool_calls=zeros_i,
                      rewards={}, group=zeros_i, info={})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    b, t, mb = _BATCH.value, _LENGTH.value, _MINIBATCHES.value
    print(f"{jax.device_count()} {jax.devices()[0].platform} devices; RL batch {b} x {t}, "
          f"{mb} minibatches; GB per device (arguments + temporaries + outputs)")
    print("| preset | params | mesh | prepare: args | temp | total | update: args | temp | total |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset in _PRESETS.value:
        for mesh in _MESHES.value:
            m = stage_memory(preset, mesh, b, t, mb)
            params = setup_lib.model_config(toolcalc_grpo.get_config(f"model={preset}")
                                            ).num_params()
            p, u = m["prepare"], m["update"]
            print(f"| {preset} | {params / 1e6:.1f}M | {mesh} | {p['arguments']:.3f} | "
                  f"{p['temporaries']:.3f} | {p['total']:.3f} | {u['arguments']:.3f} | "
                  f"{u['temporaries']:.3f} | {u['total']:.3f} |", flush=True)


if __name__ == "__main__":
    app.run(main)
