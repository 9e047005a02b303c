"""The MiniMax-M1 precision gap, measured: a float32 trainer against bf16/fp16 sampler settings.

    python -m experiments.probe_precision                          # random-init tiny model
    python -m experiments.probe_precision --model=small --temperature=0.05
    python -m experiments.probe_precision --hf_path=/path/to/hf_checkpoint   # rlx.models.hf.load

Runs `rlx.diagnostics.compare_precisions` on one batch of random tokens and prints the token-
probability mismatch (Pearson, |dp|, k3 KL, IS-ratio outliers) and the per-layer relative error of
the residual stream for each sampler precision. A random-init model has near-uniform next-token
distributions, so its gap is small; `--temperature` < 1 sharpens them (logits / T) to mimic a
trained model's peaked distributions, and `--hf_path` probes a real checkpoint.
"""

from __future__ import annotations

import argparse

import jax

import rlx
from rlx.diagnostics import compare_precisions, format_reports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="model preset (ignored with --hf_path)")
    ap.add_argument("--hf_path", default=None, help="Hugging Face checkpoint directory")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=1.0,
                    help="divides the logits on both sides; < 1 sharpens the distributions")
    ap.add_argument("--init_std", type=float, default=None,
                    help="override the preset's init std (random-init models only)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.hf_path:
        cfg, params = rlx.models.hf.load(args.hf_path)
        source = args.hf_path
    else:
        overrides = {} if args.init_std is None else {"init_std": args.init_std}
        cfg = rlx.models.preset(args.model, **overrides)
        params = jax.jit(rlx.models.Policy(cfg).init)(jax.random.key(args.seed))
        source = f"random-init {args.model}"
    vocab = rlx.models.ModelConfig.from_config(cfg).vocab_size
    k_tok, k_sample = jax.random.split(jax.random.key(args.seed + 1))
    tokens = jax.random.randint(k_tok, (args.batch, args.length), 0, vocab)

    reports = compare_precisions(cfg, params, tokens, k_sample, temperature=args.temperature)
    print(f"precision probe: {source}, tokens {args.batch}x{args.length}, "
          f"temperature {args.temperature}, trainer = float32 body and head")
    print(format_reports(reports))


if __name__ == "__main__":
    main()
