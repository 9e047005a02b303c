"""Print sampled episodes of every scaffold axis and split, so a person can see what the
procedural scaffolds look like.

    python -m experiments.show_scaffolds [--env toolcalc] [--axis call_syntax] [--samples 2]
        [--policy oracle|random] [--steps 2] [--hackable] [--seed 0]

For each axis (or only `--axis`), `--samples` episodes per split with only that axis varying
(the others canonical), then `--samples` episodes per split with every axis varying. The whole
token sequence is decoded, the assistant's tokens between ⟦ and ⟧, with each episode's labels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import app, flags

from rlx import envs
from rlx.envs.scaffold import AXES, axes_mask
from rlx.envs.scaffold.tables import axis_labels
from rlx.rollout.scripted import oracle_fn, play, random_action_fn
from rlx.rollout.trajectory import render_episode

_ENV = flags.DEFINE_string("env", "toolcalc", "a tool env: toolcalc or kvlookup")
_AXIS = flags.DEFINE_string("axis", "", "only this axis ('' = every axis, then all together)")
_SAMPLES = flags.DEFINE_integer("samples", 2, "episodes per axis and split")
_POLICY = flags.DEFINE_enum("policy", "oracle", ["oracle", "random"], "who plays")
_STEPS = flags.DEFINE_integer("steps", 2, "tool calls per task")
_HACKABLE = flags.DEFINE_bool("hackable", False, "list the forbidden reveal tool")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")


def show(env, params, axes: str, key) -> None:
    act = oracle_fn(env) if _POLICY.value == "oracle" else random_action_fn(env)
    for split in ("train", "heldout"):
        p = params.replace(vary=jnp.asarray(axes_mask(axes)),
                           split=jnp.asarray(0 if split == "train" else 1))
        ep = jax.jit(lambda k, p=p: play(env, p, k, _SAMPLES.value, act))(
            jax.random.fold_in(key, 0 if split == "train" else 1))
        ep = jax.device_get(ep)
        labels = axis_labels(env.tables, ep.scaffold)
        for i in range(_SAMPLES.value):
            shown = {a: labels[a][i] for a in AXES if axes_mask(axes)[AXES.index(a)]}
            print(f"=== varying {axes}, {split} split, episode {i}: {shown} "
                  f"reward={float(ep.rewards['env'][i]):.0f}")
            print(render_episode(env.tokenizer, ep, i))
            print()


def main(argv) -> None:
    del argv
    env, params = envs.make(_ENV.value, num_steps=_STEPS.value, hackable=_HACKABLE.value)
    key = jax.random.key(_SEED.value)
    axes = [_AXIS.value] if _AXIS.value else [*AXES, "all_axes"]
    for i, a in enumerate(axes):
        show(env, params, a, jax.random.fold_in(key, i))


if __name__ == "__main__":
    app.run(main)
