"""Forward and decode-step throughput of the model presets, against the same-run matmul roofline.

    python -m experiments.bench_model                 # tiny, small, base
    python -m experiments.bench_model --presets=tiny --repeats=3

For each preset: full causal forward tokens/s (B x T tokens per call) and decode tokens/s (one new
token per row per step on a KV cache holding `context` positions), each with the model FLOP/s as
a fraction of a float32 matmul's FLOP/s measured in the same run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import app, flags, logging

import rlx
from rlx.bench import matmul_flops, median_seconds

SHAPES = {"tiny": (16, 256), "small": (16, 256), "base": (4, 256)}  # (batch, sequence length)

_PRESETS = flags.DEFINE_list("presets", "tiny,small,base",
                             f"model presets to benchmark, comma-separated: any of {', '.join(SHAPES)}")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed calls per figure (the median is shown; "
                                "decode takes 4x as many)", lower_bound=1)
flags.register_validator("presets", lambda names: bool(names) and all(n in SHAPES for n in names),
                         f"allowed: a comma-separated list of {', '.join(SHAPES)}")


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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    peak = matmul_flops()
    print(f"devices: {jax.devices()[0].platform} x{jax.device_count()}   "
          f"float32 matmul 1024^3: {peak / 1e9:.1f} GFLOP/s")
    for name in _PRESETS.value:
        for line in bench_preset(name, _REPEATS.value, peak):
            print(line, flush=True)


if __name__ == "__main__":
    app.run(main)
