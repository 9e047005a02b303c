"""Finding E1, where precision is lost: trainer vs sampler token probabilities (MiniMax-M1, Fig. 3).

    python -m experiments.precision_gap                       # writes docs/findings/precision_gap.*
    python -m experiments.precision_gap --config=configs/precision_gap.py:quick --out=/tmp/pg

The trainer is the model in float32 throughout; each sampler variant of the config changes its
precision fields. `rlx.diagnostics.compare_precisions` lets the sampler draw a token at every
position where the policy acts in real tool-use contexts and compares both sides' probabilities
of it (Pearson, max |dp|, k3 KL, share of IS ratios outside [0.5, 2]) and the residual stream
layer by layer. Two sweeps follow: the checkpoint's logit scale (sampler temperature) and the
vocabulary size of random-init models. Writes `precision_gap.json` (every figure, per seed) and
`precision_gap.png` to `--out`, and prints the table. `run(config, out_dir)` is the same thing
for a notebook.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

import rlx
from rlx import envs
from rlx.diagnostics import compare_precisions
from rlx.diagnostics.precision import PRECISION_FIELDS
from rlx.models import DTYPES, ModelConfig, Policy
from rlx.tokenizer import hf as hf_tokenizer
from rlx.train import cli
from rlx.train.demos import make_demos

Array = jax.Array
TRAINER = dict(dtype="float32", param_dtype="float32", head_dtype="float32")
# By default XLA may keep a value in higher precision than declared when that is cheaper: it drops
# an f32 -> bf16 -> f32 rounding pair depending on how the program fuses (the LM head rounds
# explicitly since commit bf95837; a bf16 body does not). The flag makes every declared precision
# exact; it must be set before jax starts.
EXACT_PRECISION_FLAG = "--xla_allow_excess_precision=false"
MISMATCH_METRICS = ("pearson", "max_abs_dp", "mean_abs_dp", "k3_kl", "frac_ratio_out")
# M1's Fig. 3: trainer/sampler Pearson with a bf16 LM head and with an fp32 one.
M1_PEARSON = {"bf16 head": 0.987, "fp32 head": 0.997}


# ---- config ----------------------------------------------------------------------------------

def check_exact_precision() -> None:
    """Refuses to measure unless XLA computes every declared precision exactly."""
    if EXACT_PRECISION_FLAG not in os.environ.get("XLA_FLAGS", "").split():
        raise RuntimeError(f"XLA_FLAGS lacks {EXACT_PRECISION_FLAG}: without it XLA may compute the "
                           f"sampler's bfloat16 steps in float32. Set it before jax starts "
                           f"(the command line does; in a notebook, before importing jax).")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Refuses values that would fail deep inside a compile or plot nothing, naming the key."""
    for name, changes in config.variants.items():
        for field, dtype in changes.items():
            if field not in PRECISION_FIELDS or dtype not in DTYPES:
                raise ValueError(f"variants[{name!r}].{field}={dtype!r} is not allowed; allowed "
                                 f"fields {PRECISION_FIELDS}, each one of {sorted(DTYPES)}")
    for name in config.scatter_variants:
        if name not in config.variants:
            raise ValueError(f"scatter_variants names {name!r}; allowed: the keys of variants "
                             f"{list(config.variants)}")
    for key, values in (("temperatures", config.temperatures),
                        ("vocab_sweep.temperature", (config.vocab_sweep.temperature,))):
        if not values or any(not t > 0 for t in values):
            raise ValueError(f"{key}={values!r} is not allowed; allowed: numbers > 0")
    if not config.vocab_sweep.vocab_sizes or any(v < 2 for v in config.vocab_sweep.vocab_sizes):
        raise ValueError(f"vocab_sweep.vocab_sizes={config.vocab_sweep.vocab_sizes!r} is not "
                         f"allowed; allowed: integers >= 2")


def sampler_variants(config: ml_collections.ConfigDict) -> dict[str, dict[str, str]]:
    return {name: changes.to_dict() for name, changes in config.variants.items()}


# ---- contexts --------------------------------------------------------------------------------

def demo_contexts(config: ml_collections.ConfigDict) -> Callable[[Array], tuple[Array, Array]]:
    """`contexts(key) -> (tokens [rows, max_len] int32, acting [rows, max_len] bool)`: oracle
    tool-use episodes in the checkpoint's tokenizer; `acting[t]` marks the positions whose next
    token is the policy's, where an RL sampler draws."""
    env_cfg, ctx = config.env, config.contexts
    env, env_params = envs.make(env_cfg.name, split="train",
                                tokenizer=hf_tokenizer.load(config.checkpoint),
                                **{k: v for k, v in env_cfg.items() if k != "name"})
    demos = jax.jit(make_demos(env, env_params, batch=ctx.rows, max_len=ctx.max_len,
                               max_rounds=ctx.max_rounds, mixture=f"{env_cfg.axes}:1"))

    def contexts(key):
        tokens, policy_mask = demos(key)
        return tokens, jnp.zeros_like(policy_mask).at[:, :-1].set(policy_mask[:, 1:])

    return contexts


# ---- measurements ----------------------------------------------------------------------------

def _log_probs(cfg: ModelConfig, params, tokens: Array, temperature: float) -> Array:
    """[B,T,V] float32 log softmax(logits / temperature), params cast to cfg's `param_dtype`."""
    params = jax.tree.map(lambda p: p.astype(cfg.jnp_param_dtype), params)
    return jax.nn.log_softmax(Policy(cfg).logits(params, tokens) / temperature, axis=-1)


@functools.partial(jax.jit, static_argnums=(0, 4))
def mean_max_prob(cfg: ModelConfig, params, tokens: Array, mask: Array,
                  temperature: float) -> Array:
    """How peaked the model's next-token distributions are: the mean over `mask` [B,T] of the
    largest probability at each position (float32 scalar)."""
    max_prob = jnp.exp(jnp.max(_log_probs(cfg, params, tokens, temperature), axis=-1))
    return jnp.sum(max_prob * mask) / jnp.sum(mask)


@functools.partial(jax.jit, static_argnums=(0, 1, 5))
def sampled_token_probs(trainer: ModelConfig, sampler: ModelConfig, params, tokens: Array,
                        key: Array, temperature: float) -> tuple[Array, Array]:
    """([B,T], [B,T]) float32: the trainer's and the sampler's probability of y_t, the token the
    sampler draws at position t from softmax(logits / temperature) -- the draw `precision_probe`
    makes with the same key, so these are the points its `sampled` metrics summarize."""
    logp_trainer = _log_probs(trainer, params, tokens, temperature)
    logp_sampler = _log_probs(sampler, params, tokens, temperature)
    drawn = jax.random.categorical(key, logp_sampler, axis=-1)[..., None]
    prob_of_drawn = lambda logp: jnp.exp(jnp.take_along_axis(logp, drawn, axis=-1)[..., 0])
    return prob_of_drawn(logp_trainer), prob_of_drawn(logp_sampler)


def probe_figures(cfg: ModelConfig, params, tokens: Array, mask: Array, key: Array,
                  variants: dict[str, dict[str, str]], temperature: float) -> dict:
    """One seed's figures: `mean_max_prob` and, per variant, the sampled-token mismatch metrics,
    `n_tokens`, `layer_rel_err` [L+1] (the residual stream entering each layer, then leaving the
    last) and `logit_rel_err`."""
    reports = compare_precisions(cfg, params, tokens, key, variants=variants, mask=mask,
                                 temperature=temperature)   # its default trainer is TRAINER
    per_variant = {}
    for name, report in reports.items():
        sampled = report["sampled"]
        per_variant[name] = {k: float(sampled[k]) for k in MISMATCH_METRICS} | {
            "n_tokens": int(sampled["n_tokens"]),
            "layer_rel_err": np.asarray(report["layer_rel_err"]).tolist(),
            "logit_rel_err": float(report["logit_rel_err"])}
    trainer = cfg.replace(**TRAINER)
    return {"mean_max_prob": float(mean_max_prob(trainer, params, tokens, mask, temperature)),
            "variants": per_variant}


def by_seed(per_seed: list[dict]) -> dict:
    """[{figure: value}] over seeds -> {figure: [value per seed]}, nested dicts alike."""
    first = per_seed[0]
    if isinstance(first, dict):
        return {k: by_seed([figures[k] for figures in per_seed]) for k in first}
    return per_seed


def seed_keys(seed: int) -> tuple[Array, Array]:
    """(contexts or init key, sampling key) of one seed."""
    return tuple(jax.random.split(jax.random.key(seed)))


def checkpoint_sweep(config: ml_collections.ConfigDict) -> dict:
    """The checkpoint on demo contexts at every temperature, plus the scatter points of the
    headline temperature (`temperatures[0]`) and seed 0."""
    model_cfg, params = rlx.models.hf.load(config.checkpoint)
    cfg = ModelConfig.from_config(model_cfg)
    contexts = demo_contexts(config)
    seeds = [(contexts(context_key), sample_key)
             for context_key, sample_key in map(seed_keys, range(config.seeds))]
    variants = sampler_variants(config)
    sweep = [{"temperature": t, **by_seed([
        probe_figures(cfg, params, tokens, acting, key, variants, t)
        for (tokens, acting), key in seeds])} for t in config.temperatures]

    (tokens, acting), key = seeds[0]
    trainer, picked = cfg.replace(**TRAINER), np.asarray(acting)
    scatter = {}
    for name in config.scatter_variants:
        probs = sampled_token_probs(trainer, trainer.replace(**variants[name]), params, tokens,
                                    key, config.temperatures[0])
        scatter[name] = {side: np.asarray(p)[picked].tolist()
                         for side, p in zip(("trainer_prob", "sampler_prob"), probs, strict=True)}
    return {"path": config.checkpoint, "n_layers": cfg.n_layers, "vocab_size": cfg.vocab_size,
            "d_model": cfg.d_model, "sweep": sweep,
            "scatter": {"temperature": config.temperatures[0], "seed": 0, "variants": scatter}}


def vocab_sweep(config: ml_collections.ConfigDict) -> dict:
    """Random-init models of one width at each vocabulary size, on uniform random tokens."""
    sweep = config.vocab_sweep
    variants = sampler_variants(config)
    points = []
    for vocab in sweep.vocab_sizes:
        cfg = ModelConfig.from_config(rlx.models.preset(sweep.model, vocab_size=vocab))
        per_seed = []
        for init_key, sample_key in map(seed_keys, range(config.seeds)):
            params = jax.jit(Policy(cfg).init)(init_key)
            tokens = jax.random.randint(jax.random.fold_in(init_key, 1),
                                        (sweep.rows, sweep.length), 0, vocab)
            per_seed.append(probe_figures(cfg, params, tokens, jnp.ones(tokens.shape, bool),
                                          sample_key, variants, sweep.temperature))
        points.append({"vocab_size": vocab, **by_seed(per_seed)})
    return {"model": sweep.model, "d_model": cfg.d_model, "temperature": sweep.temperature,
            "points": points}


# ---- report ----------------------------------------------------------------------------------

def _mean(values: list) -> float | np.ndarray:
    return np.mean(np.asarray(values, np.float64), axis=0)


def format_table(results: dict) -> str:
    """Markdown tables of the seed means: the headline figures per variant, then 1 - Pearson
    along both sweeps."""
    ckpt, vocab = results["checkpoint"], results["vocab_sweep"]
    head = ckpt["sweep"][0]
    n_tokens = sum(next(iter(head["variants"].values()))["n_tokens"])
    lines = [f"sampler vs fp32 trainer, {ckpt['path']} at temperature {head['temperature']}, "
             f"mean of {results['seeds']} seed(s), {n_tokens} sampled tokens",
             "| sampler | Pearson | max abs dp | mean abs dp | k3 KL | IS ratio out of [0.5, 2] "
             "| logit rel. err | last-layer rel. err |", "|" + "---|" * 8]
    for name, f in head["variants"].items():
        lines.append(f"| {name} | {_mean(f['pearson']):.6f} | {_mean(f['max_abs_dp']):.2e} | "
                     f"{_mean(f['mean_abs_dp']):.2e} | {_mean(f['k3_kl']):.2e} | "
                     f"{_mean(f['frac_ratio_out']):.4f} | {_mean(f['logit_rel_err']):.2e} | "
                     f"{_mean(f['layer_rel_err'])[-1]:.2e} |")
    sweeps = [(f"T={p['temperature']:g}", p) for p in ckpt["sweep"]] + [
        (f"V={p['vocab_size']}", p) for p in vocab["points"]]
    lines += ["", f"1 - Pearson: checkpoint by temperature T; random-init {vocab['model']} "
              f"(d_model {vocab['d_model']}, T={vocab['temperature']:g}) by vocabulary size V",
              "| sampler | " + " | ".join(label for label, _ in sweeps) + " |",
              "|" + "---|" * (len(sweeps) + 1),
              "| mean max prob | " + " | ".join(f"{_mean(p['mean_max_prob']):.3f}"
                                                for _, p in sweeps) + " |"]
    for name in head["variants"]:
        lines.append(f"| {name} | " + " | ".join(
            f"{1 - _mean(p['variants'][name]['pearson']):.2e}" for _, p in sweeps) + " |")
    return "\n".join(lines)


def _scatter_panel(ax, name: str, probs: dict[str, list[float]], pearson: float,
                   color: str) -> None:
    ax.scatter(probs["trainer_prob"], probs["sampler_prob"], s=4, alpha=0.4, color=color,
               label=f"Pearson {pearson:.5f}\n({len(probs['trainer_prob'])} tokens)")
    ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", title=f"sampler: {name}",
           xlabel="trainer probability (fp32)", ylabel="sampler probability")
    ax.legend(loc="upper left", fontsize=8)


def _layer_panel(ax, variants: dict, colors: dict[str, str]) -> None:
    n = len(next(iter(variants.values()))["layer_rel_err"][0])
    labels = ["embed"] + [f"in {i}" for i in range(1, n - 1)] + [f"out {n - 2}", "logits"]
    for name, f in variants.items():
        errs = list(_mean(f["layer_rel_err"])) + [_mean(f["logit_rel_err"])]
        ax.plot(range(n + 1), errs, marker="o", color=colors[name], label=name)
    ax.set_xticks(range(n + 1), labels, fontsize=8)
    ax.set(title="where the error enters (mean over seeds)",
           xlabel="residual stream entering layer i, leaving the last; then the logits",
           ylabel="relative error ||trainer - sampler|| / ||trainer||")
    ax.legend(fontsize=7)


def _sweep_panel(ax, points: list[dict], x_key: str, colors: dict[str, str]) -> None:
    """1 - Pearson per variant along a sweep, log-log, bars = seed min..max. A variant whose
    probabilities equal the trainer's (the control) has no place on log axes and is left out."""
    x = np.array([p[x_key] for p in points], np.float64)
    for name, color in colors.items():
        if not any(np.any(p["variants"][name]["max_abs_dp"]) for p in points):
            continue  # the sampler computes exactly what the trainer does
        gap = np.array([1 - np.asarray(p["variants"][name]["pearson"]) for p in points])
        mean = gap.mean(axis=1)
        ax.errorbar(x, mean, yerr=[mean - gap.min(axis=1), gap.max(axis=1) - mean],
                    marker="o", capsize=3, color=color, label=name)
    for (label, pearson), style in zip(M1_PEARSON.items(), ("--", ":"), strict=True):
        ax.axhline(1 - pearson, color="k", ls=style, lw=1, label=f"M1, {label} ({pearson})")
    ax.set(xscale="log", yscale="log", ylabel="1 - Pearson (trainer vs sampler)")
    ax.set_xticks(x, [f"{v:g}\nmax p {_mean(p['mean_max_prob']):.2f}"
                      for v, p in zip(x, points, strict=True)], fontsize=8)
    ax.minorticks_off()
    ax.legend(fontsize=7)


def _seeds(n: int) -> str:
    return "seed 0" if n == 1 else f"seeds 0-{n - 1}"


def plot(results: dict, path: str) -> None:
    """precision_gap.png: the M1 Fig. 3 scatters, the per-layer error and both sweeps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ckpt, vocab = results["checkpoint"], results["vocab_sweep"]
    head, scatter = ckpt["sweep"][0], ckpt["scatter"]
    fig = plt.figure(figsize=(16, 10))
    grid = fig.add_gridspec(2, 6)
    colors = {name: f"C{i}" for i, name in enumerate(head["variants"])}
    for i, (name, probs) in enumerate(scatter["variants"].items()):
        _scatter_panel(fig.add_subplot(grid[0, 2 * i:2 * i + 2]), name, probs,
                       head["variants"][name]["pearson"][scatter["seed"]], colors[name])
    _layer_panel(fig.add_subplot(grid[0, 4:]), head["variants"], colors)
    ax = fig.add_subplot(grid[1, :3])
    _sweep_panel(ax, [p | {"logit_scale": 1 / p["temperature"]} for p in ckpt["sweep"]],
                 "logit_scale", colors)
    ax.set(title="checkpoint: sharper distributions (logits / T)",
           xlabel="logit scale 1/T (sampler temperature T); max p = mean top probability")
    ax = fig.add_subplot(grid[1, 3:])
    _sweep_panel(ax, vocab["points"], "vocab_size", colors)
    ax.set(title=f"random-init {vocab['model']} (d_model {vocab['d_model']}), logits / "
                 f"{vocab['temperature']:g}",
           xlabel="vocabulary size; max p = mean top probability")
    fig.suptitle(
        f"Where precision is lost: fp32 trainer vs lower-precision sampler, probabilities of the "
        f"tokens the sampler draws\n{os.path.basename(ckpt['path'].rstrip('/'))} "
        f"({ckpt['n_layers']} layers, d_model {ckpt['d_model']}, vocab {ckpt['vocab_size']}) on "
        f"oracle tool-use contexts; {_seeds(results['seeds'])} (scatter: seed 0 at "
        f"T={scatter['temperature']:g}; other panels: mean over seeds, bars: seed min..max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(config: ml_collections.ConfigDict, out_dir: str) -> dict:
    """Measures everything, writes `precision_gap.json` and `precision_gap.png` to `out_dir`,
    prints the table and returns the results."""
    check_exact_precision()
    check_config(config)
    start = time.perf_counter()
    results = {"seeds": config.seeds, "xla_flags": os.environ["XLA_FLAGS"], "trainer": TRAINER,
               "variants": sampler_variants(config),
               "checkpoint": checkpoint_sweep(config), "vocab_sweep": vocab_sweep(config)}
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    results["config"] = config.to_dict()
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "precision_gap.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(out_dir, "precision_gap.png"))
    print(format_table(results), flush=True)
    print(f"measured in {results['wall_seconds']} s; wrote {out_dir}/precision_gap.{{json,png}}")
    return results


_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/precision_gap.py", "Experiment config file[:arg].", lock_config=True)
_OUT = flags.DEFINE_string("out", "docs/findings", "Where precision_gap.json and .png go.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    # jax has not started a backend yet: nothing above computes.
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {EXACT_PRECISION_FLAG}".strip()
    run(_CONFIG.value, _OUT.value)


if __name__ == "__main__":
    cli.run(main, "configs/precision_gap.py")
