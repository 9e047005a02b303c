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

import jax
from absl import app, flags, logging

import rlx
from rlx.diagnostics import compare_precisions, format_reports

_MODEL = flags.DEFINE_enum("model", "tiny", list(rlx.models.preset_names()),
                           "model preset (ignored with --hf_path)")
_HF_PATH = flags.DEFINE_string("hf_path", None, "Hugging Face checkpoint directory")
_BATCH = flags.DEFINE_integer("batch", 8, "rows of random tokens", lower_bound=1)
_LENGTH = flags.DEFINE_integer("length", 128, "tokens per row", lower_bound=1)
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0,
                                  "divides the logits on both sides; < 1 sharpens the distributions")
_INIT_STD = flags.DEFINE_float("init_std", None,
                               "override the preset's init std (random-init models only)")
_SEED = flags.DEFINE_integer("seed", 0, "seed of the random init, tokens and samples")
flags.register_validator("temperature", lambda t: t > 0, "allowed: a temperature > 0")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    hf_path, model, seed = _HF_PATH.value, _MODEL.value, _SEED.value
    batch, length, temperature = _BATCH.value, _LENGTH.value, _TEMPERATURE.value

    if hf_path:
        cfg, params = rlx.models.hf.load(hf_path)
        source = hf_path
    else:
        overrides = {} if _INIT_STD.value is None else {"init_std": _INIT_STD.value}
        cfg = rlx.models.preset(model, **overrides)
        params = jax.jit(rlx.models.Policy(cfg).init)(jax.random.key(seed))
        source = f"random-init {model}"
    vocab = rlx.models.ModelConfig.from_config(cfg).vocab_size
    k_tok, k_sample = jax.random.split(jax.random.key(seed + 1))
    tokens = jax.random.randint(k_tok, (batch, length), 0, vocab)

    reports = compare_precisions(cfg, params, tokens, k_sample, temperature=temperature)
    print(f"precision probe: {source}, tokens {batch}x{length}, "
          f"temperature {temperature}, trainer = float32 body and head")
    print(format_reports(reports))


if __name__ == "__main__":
    app.run(main)
