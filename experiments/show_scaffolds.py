"""Print rendered episodes (oracle and random policy) for every variant of every scaffold axis,
so a person can see what the scaffolds look like.

    python experiments/show_scaffolds.py [--env toolcalc] [--axis call_syntax] [--steps 2]
        [--policy oracle|random|both] [--hackable] [--fault_rate 0.3]

Each episode pins one axis to one variant (the others at their canonical variant 0) and prints
the whole token sequence decoded, with the assistant's tokens between ⟦ and ⟧.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rlx import envs  # noqa: E402
from rlx.envs import scaffold as S  # noqa: E402
from rlx.envs.play import oracle_fn, play, random_action_fn  # noqa: E402


def render(tok, tokens, mask, length) -> str:
    out, cur, span = [], None, []
    for t, m in zip(tokens[:length], mask[:length], strict=True):
        if cur is not None and m != cur:
            out.append(("⟦" + tok.decode(span) + "⟧") if cur else tok.decode(span))
            span = []
        cur = m
        span.append(int(t))
    if span:
        out.append(("⟦" + tok.decode(span) + "⟧") if cur else tok.decode(span))
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="toolcalc", choices=envs.ENVS.names())
    ap.add_argument("--axis", default="all", choices=["all", *S.AXES])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--policy", default="both", choices=["oracle", "random", "both"])
    ap.add_argument("--hackable", action="store_true")
    ap.add_argument("--fault_rate", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    env, params = envs.make(args.env, num_steps=args.steps, hackable=args.hackable,
                            fault_rate=args.fault_rate)
    tb, tok = env.tables, env.tokenizer
    axes = S.AXES if args.axis == "all" else (args.axis,)
    rows = [(a, v) for a in axes for v in range(int(tb.n_total[S.AXIS_INDEX[a]]))]
    force = np.full((len(rows), len(S.AXES)), -1, np.int32)   # -1: canonical variant 0
    for i, (a, v) in enumerate(rows):
        force[i, S.AXIS_INDEX[a]] = v
    policies = {"oracle": oracle_fn(env), "random": random_action_fn(env, 24)}
    names = list(policies) if args.policy == "both" else [args.policy]
    key = jax.random.PRNGKey(args.seed)

    for pname in names:
        @jax.jit
        def run(k, force, pname=pname):
            ps = jax.vmap(lambda f: params.replace(force=f))(force)
            return jax.vmap(lambda p, kk: play(env, p, kk, 1, policies[pname],
                                               max_rounds=3 * env.max_steps + 2))(
                ps, jax.random.split(k, force.shape[0]))

        ep = jax.tree.map(np.asarray, run(key, jnp.asarray(force)))
        for i, (a, _) in enumerate(rows):
            label = S.variant_names(tb, np.maximum(force[i], 0))[a]
            info = {k: int(x[i, 0]) for k, x in ep.info.items()}
            print(f"==== {args.env} | {pname} | {a} = {label} | correct={info['correct']} "
                  f"calls={info['tool_calls']} invalid={info['invalid_calls']} "
                  f"faults={info['faults']} ====")
            print(render(tok, ep.tokens[i, 0], ep.policy_mask[i, 0], int(ep.length[i, 0])))
            print()


if __name__ == "__main__":
    main()
