"""Forward and decode-step throughput of the model presets, against the same-run matmul roofline.

    python -m experiments.bench_model                 # tiny, small, base
    python -m experiments.bench_model --presets=tiny --repeats=3

For each preset: full causal forward tokens/s (B x T tokens per call) and decode tokens/s (one new
token per row per step on a KV cache holding `context` positions), each with the model FLOP/s as
a fraction of a float32 matmul's FLOP/s measured in the same run.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import rlx
from rlx.bench import matmul_flops, median_seconds

SHAPES = {"tiny": (16, 256), "small": (16, 256), "base": (4, 256)}  # (batch, sequence length)


def bench_preset(name: str, repeats: int, peak: float) -> list[str]:
    policy = rlx.models.Policy(rlx.models.preset(name))
    cfg = policy.cfg
    params = jax.jit(policy.init)(jax.random.key(0))
    b, t = SHAPES[name]
    tokens = jax.random.randint(jax.random.key(1), (b, t), 0, cfg.vocab_size)

    forward = jax.jit(policy.logits)
    sec = median_seconds(lambda: forward(params, tokens), repeats)
    fwd_tps = b * t / sec
    fwd_frac = fwd_tps * cfg.flops_per_token(context=t // 2) / peak

    # Decode: one token per row on a cache already holding t positions (of 2t slots).
    _, cache = jax.jit(policy.prefill, static_argnums=3)(params, tokens, jnp.full((b,), t), 2 * t)
    step = jax.jit(lambda c, x: policy.extend(params, c, x)[0][:, -1].argmax(-1))
    nxt = tokens[:, :1]
    sec = median_seconds(lambda: step(cache, nxt), repeats * 4)
    dec_tps = b / sec
    dec_frac = dec_tps * cfg.flops_per_token(context=t) / peak
    return [f"{name:6s} {cfg.num_params() / 1e6:7.2f}M  forward B={b} T={t}: {fwd_tps:10.0f} tok/s "
            f"({fwd_frac:6.1%} of matmul)   decode B={b} ctx={t}: {dec_tps:8.0f} tok/s "
            f"({dec_frac:6.2%} of matmul)"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small,base")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    peak = matmul_flops()
    print(f"devices: {jax.devices()[0].platform} x{jax.device_count()}   "
          f"float32 matmul 1024^3: {peak / 1e9:.1f} GFLOP/s")
    for name in args.presets.split(","):
        for line in bench_preset(name, args.repeats, peak):
            print(line, flush=True)


if __name__ == "__main__":
    main()
