"""Rollout throughput against the same-run matmul roofline.

    python -m experiments.bench_rollout                     # everything
    python -m experiments.bench_rollout --only=sample --repeats=3

Sections:
  sample   new tokens/s of `rlx.rollout.sample` (temperature 1, no stop tokens, so every row makes
           all its tokens): the `tiny` preset (= Qwen2 hidden 128, 4 layers, 4/2 heads, MLP 512,
           vocab 512, tied) at B=16, prompt 32, 64 new tokens, and the `small` preset at B=64.
  episodes multi-round episodes/s of `rlx.rollout.run_episodes` on a scripted env that ends after
           exactly 8 rounds (tiny, B=16, up to 16 tokens per round), on the on-device driver and
           on the host-env driver; with the share of decode slots spent on idle rows.

Each figure is a median over `--repeats` timed calls after one compile-and-warm-up call, printed
with its model FLOP/s (FLOPs per token at the mean context x tokens/s) as a fraction of a float32
1024^3 matmul's FLOP/s measured in the same process. For reference, HF transformers' `generate`
makes about 5,600 new tokens/s on the tiny-equivalent model on the project's 2-core machines
(a figure quoted in the rollout issue, not measured here).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

import rlx
from rlx import rollout
from rlx.bench import matmul_flops, median_seconds
from rlx.rollout.testing import ScriptedEnv, ScriptedHostEnv

HF_GENERATE_TINY_TPS = 5600.0
SECTIONS = ("sample", "episodes")

_ONLY = flags.DEFINE_list("only", "sample,episodes",
                          f"sections to run, comma-separated: any of {', '.join(SECTIONS)}")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed calls per figure (the median is shown)",
                                lower_bound=1)
flags.register_validator("only", lambda names: bool(names) and all(n in SECTIONS for n in names),
                         f"allowed: a comma-separated list of {', '.join(SECTIONS)}")


def _model(name: str):
    policy = rlx.models.Policy(rlx.models.preset(name))
    return policy, jax.jit(policy.init)(jax.random.key(0))


def bench_sample(name: str, batch: int, prompt: int, new: int, repeats: int, peak: float) -> str:
    policy, params = _model(name)
    cfg = policy.cfg
    prompts = jax.random.randint(jax.random.key(1), (batch, prompt), 0, cfg.vocab_size)
    keys = iter(jax.random.split(jax.random.key(2), repeats + 1))
    run = lambda: rollout.sample(policy, params, prompts, next(keys), temperature=1.0,
                                 max_new_tokens=new)
    sec = median_seconds(run, repeats)
    tps = batch * new / sec
    frac = tps * cfg.flops_per_token(context=prompt + new // 2) / peak
    extra = f"  = {tps / HF_GENERATE_TINY_TPS:4.2f}x HF generate (quoted)" if name == "tiny" else ""
    return (f"sample    {name:5s} B={batch:3d} prompt={prompt} new={new}: {tps:9.0f} new tok/s  "
            f"({sec * 1e3:7.1f} ms/call, {frac:7.3%} of matmul){extra}")


def bench_episodes(repeats: int, peak: float, host: bool) -> str:
    policy, params = _model("tiny")
    cfg = policy.cfg
    env = ScriptedHostEnv(rounds=8) if host else ScriptedEnv(rounds=8)
    b, new = 16, 16
    keys = iter(jax.random.split(jax.random.key(3), repeats + 1))
    last = {}

    def run():
        last["traj"] = rollout.run_episodes(policy, params, env, None, next(keys), batch_size=b,
                                            max_rounds=8, max_new_tokens=new, temperature=1.0)
        return last["traj"]

    sec = median_seconds(run, repeats)
    traj = last["traj"]
    length = np.asarray(traj.length)
    rounds = np.asarray(traj.rounds)
    assert (rounds == 8).all() and (np.asarray(traj.finish_reason)
                                    == rollout.FinishReason.ENV_DONE).all()
    policy_tokens = int(traj.stats["policy_tokens"])
    # Every row token goes through the model once (prompt, policy tokens, observations).
    frac = length.sum() / sec * cfg.flops_per_token(context=int(length.mean()) // 2) / peak
    driver = "host-env" if host else "on-device"
    return (f"episodes  tiny  B={b} 8 rounds x <={new} tok ({driver:9s}): {b / sec:7.1f} "
            f"episodes/s  {policy_tokens / sec:8.0f} policy tok/s  ({sec * 1e3:7.1f} ms/call, "
            f"{frac:7.3%} of matmul)  idle decode slots {float(traj.stats['idle_fraction']):.1%}"
            f"  mean row {length.mean():.0f} tok")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    only, repeats = set(_ONLY.value), _REPEATS.value
    peak = matmul_flops()
    print(f"devices: {jax.devices()[0].platform} x{jax.device_count()}   "
          f"float32 matmul 1024^3: {peak / 1e9:.1f} GFLOP/s", flush=True)
    if "sample" in only:
        print(bench_sample("tiny", 16, 32, 64, repeats, peak), flush=True)
        print(bench_sample("small", 64, 32, 64, repeats, peak), flush=True)
    if "episodes" in only:
        print(bench_episodes(repeats, peak, host=False), flush=True)
        print(bench_episodes(repeats, peak, host=True), flush=True)
    jnp.zeros(()).block_until_ready()


if __name__ == "__main__":
    app.run(main)
