"""Layer-by-layer precision probe: where do two precision settings of the same model diverge?

`precision_probe(cfg_a, cfg_b, params, tokens, key)` runs the same parameters under two model
configs that differ only in precision fields (`dtype`, `param_dtype`, `head_dtype`) and compares
  - the residual stream entering every layer and leaving the last (`layer_rel_err`, [L+1]),
  - the pre-head hidden state (after the final norm) and the float32 logits,
  - the token probabilities: teacher-forced on `tokens`, and on tokens sampled from side b at
    every position (side b plays the sampler, side a the trainer), via `mismatch_metrics`.
This reproduces MiniMax-M1's finding (bf16 LM head: trainer/sampler Pearson 0.987; fp32 head:
0.997) as a measurement: e.g. a = all float32, b = bfloat16 body with a bfloat16 or a float32 head.

Side b's parameters are cast to its `param_dtype` (a sampler holding bf16 weights); side a's to
its own. Relative errors are ||x_a - x_b|| / ||x_a|| in float32 over the positions in `mask`.
On a random-init model logits are tiny and probabilities near uniform, so the gap is small;
`temperature` < 1 sharpens the distributions (and scales the logit error by 1/temperature) as a
stand-in for a trained model's peaked ones.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from rlx.diagnostics.mismatch import mismatch_metrics
from rlx.models import ModelConfig, Policy

Array = jax.Array
# The model-config fields a trainer or sampler precision setting may change.
PRECISION_FIELDS = ("dtype", "param_dtype", "head_dtype")


def _check_same_model(a: ModelConfig, b: ModelConfig) -> None:
    for f in dataclasses.fields(ModelConfig):
        if f.name not in PRECISION_FIELDS and getattr(a, f.name) != getattr(b, f.name):
            raise ValueError(
                f"precision_probe compares precision settings of ONE model, but model.{f.name} "
                f"differs: {getattr(a, f.name)!r} vs {getattr(b, f.name)!r}; only "
                f"{PRECISION_FIELDS} may differ")


def _rel_err(a: Array, b: Array, mask: Array, axes: tuple[int, ...]) -> Array:
    """||a - b|| / ||a|| over `axes`, positions weighted by `mask` [B,T] (broadcast over D)."""
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    w = mask[..., None]
    num = jnp.sum(jnp.square(a - b) * w, axis=axes)
    den = jnp.sum(jnp.square(a) * w, axis=axes)
    return jnp.sqrt(num / jnp.maximum(den, jnp.finfo(jnp.float32).tiny))


def _side(policy: Policy, params, tokens: Array) -> tuple[Array, Array, Array]:
    params = jax.tree.map(lambda p: p.astype(policy.cfg.jnp_param_dtype), params)
    out = policy.forward(params, tokens, return_layers=True)
    logits = policy.head(params, out.hidden)
    return out.layers, out.hidden, logits


def precision_probe(cfg_a: Any, cfg_b: Any, params: Any, tokens: Array,
                    key: Array | None = None, *, mask: Array | None = None,
                    temperature: float = 1.0) -> dict[str, Any]:
    """Compares one model under two precision settings; see the module docstring.

    Args:
      cfg_a, cfg_b: model configs (ConfigDict or ModelConfig) equal except in precision fields.
      params: the parameters (float32 recommended; each side casts to its `param_dtype`).
      tokens: [B,T] int32.  key: PRNG key for sampling from side b (default key 0).
      mask: [B,T] positions to compare (default all).  temperature: divides the logits before
        the softmax on both sides, as the sampler's temperature would.

    Returns a dict of float32 arrays:
      layer_rel_err [L+1], hidden_rel_err, logit_rel_err, logit_max_abs_err,
      teacher_forced: mismatch_metrics of p(tokens[t+1] | tokens[<=t]),
      sampled: mismatch_metrics of p(y_t | tokens[<=t]) with y_t ~ side b's softmax(logits / T).
    """
    ca, cb = ModelConfig.from_config(_as_dict(cfg_a)), ModelConfig.from_config(_as_dict(cfg_b))
    _check_same_model(ca, cb)
    key = jax.random.key(0) if key is None else key
    tokens = jnp.asarray(tokens, jnp.int32)
    mask = jnp.ones(tokens.shape, jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    return _probe(ca, cb, params, tokens, key, mask, float(temperature))


def _as_dict(cfg):
    return cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else cfg


# Static on the (hashable, by value) ModelConfigs, so repeated probes of the same settings reuse
# the compiled program.
@functools.partial(jax.jit, static_argnums=(0, 1, 6))
def _probe(ca: ModelConfig, cb: ModelConfig, params, tokens, key, mask, temperature):
    layers_a, hidden_a, logits_a = _side(Policy(ca), params, tokens)
    layers_b, hidden_b, logits_b = _side(Policy(cb), params, tokens)
    logp_a = jax.nn.log_softmax(logits_a / temperature, axis=-1)
    logp_b = jax.nn.log_softmax(logits_b / temperature, axis=-1)
    pick = lambda lp, y: jnp.take_along_axis(lp, y[..., None], axis=-1)[..., 0]

    # Teacher-forced: position t predicts tokens[t+1].
    nxt = tokens[:, 1:]
    tf_mask = mask[:, 1:] * mask[:, :-1]
    teacher = mismatch_metrics(pick(logp_a[:, :-1], nxt), pick(logp_b[:, :-1], nxt), tf_mask)
    # Sampled: at every position, the token side b would sample there.
    y = jax.random.categorical(key, logp_b, axis=-1)
    sampled = mismatch_metrics(pick(logp_a, y), pick(logp_b, y), mask)

    d = logits_a - logits_b
    return {
        "layer_rel_err": _rel_err(layers_a, layers_b, mask[None], axes=(1, 2, 3)),
        "hidden_rel_err": _rel_err(hidden_a, hidden_b, mask, axes=(0, 1, 2)),
        "logit_rel_err": _rel_err(logits_a, logits_b, mask, axes=(0, 1, 2)),
        "logit_max_abs_err": jnp.max(jnp.abs(d) * mask[..., None]),
        "teacher_forced": teacher,
        "sampled": sampled,
    }


def precision_variants() -> dict[str, dict[str, str]]:
    """Named sampler-side precision settings the probe script compares against float32."""
    return {
        "fp32 body / bf16 head": dict(head_dtype="bfloat16"),
        "bf16 body / fp32 head": dict(dtype="bfloat16", param_dtype="bfloat16",
                                      head_dtype="float32"),
        "bf16 body / bf16 head": dict(dtype="bfloat16", param_dtype="bfloat16",
                                      head_dtype="bfloat16"),
        "fp16 body / fp16 head": dict(dtype="float16", param_dtype="float16",
                                      head_dtype="float16"),
    }


def compare_precisions(model_cfg: Any, params: Any, tokens: Array, key: Array | None = None, *,
                       variants: dict[str, dict[str, str]] | None = None,
                       trainer: dict[str, str] | None = None, mask: Array | None = None,
                       temperature: float = 1.0) -> dict[str, dict[str, Any]]:
    """Runs `precision_probe` of the trainer setting (default: all float32) against each sampler
    variant (default: `precision_variants()`); returns {variant name: report}."""
    base = ModelConfig.from_config(_as_dict(model_cfg))
    for name, changes in {"trainer": trainer or {}, **(variants or {})}.items():
        unknown = sorted(set(changes) - set(PRECISION_FIELDS))
        if unknown:
            raise ValueError(f"{name}: precision fields {unknown} are unknown; allowed: "
                             f"{list(PRECISION_FIELDS)}")
    cfg_a = base.replace(**{**dict.fromkeys(PRECISION_FIELDS, "float32"), **(trainer or {})})
    reports = {}
    for name, changes in (variants or precision_variants()).items():
        cfg_b = cfg_a.replace(**changes)
        reports[name] = jax.device_get(precision_probe(cfg_a, cfg_b, params, tokens, key,
                                                       mask=mask, temperature=temperature))
    return reports


def format_reports(reports: dict[str, dict[str, Any]]) -> str:
    """Two plain-text tables: token-probability mismatch per variant, and the per-layer relative
    error of the residual stream (layer i = the stream entering layer i; the last row leaves the
    last layer), the pre-head hidden state and the logits."""
    cols = [("pearson", "pearson", "{:.6f}"), ("max_abs_dp", "max|dp|", "{:.3e}"),
            ("mean_abs_dp", "mean|dp|", "{:.3e}"), ("k3_kl", "k3 KL", "{:.3e}"),
            ("frac_ratio_out", "rho out [.5,2]", "{:.4f}")]
    w = max(len(n) for n in reports) + 2
    lines = []
    for part, title in (("sampled", "tokens sampled from the sampler side"),
                        ("teacher_forced", "teacher-forced tokens")):
        lines += [f"token-probability mismatch vs the trainer, {title}",
                  "sampler precision".ljust(w) + "".join(f"{c:>16}" for _, c, _ in cols)]
        for name, r in reports.items():
            lines.append(name.ljust(w) + "".join(f"{fmt.format(float(r[part][k])):>16}"
                                                 for k, _, fmt in cols))
        lines.append("")
    names = list(reports)
    cw = max(14, max(len(n) for n in names) + 2)
    lines += ["relative error ||a-b||/||a|| vs the trainer",
              "".ljust(14) + "".join(f"{n:>{cw}}" for n in names)]
    n_layers = len(next(iter(reports.values()))["layer_rel_err"])
    for i in range(n_layers):
        label = f"layer {i} in" if i < n_layers - 1 else f"layer {i - 1} out"
        lines.append(label.ljust(14) + "".join(
            f"{float(reports[n]['layer_rel_err'][i]):>{cw}.3e}" for n in names))
    for key, label in (("hidden_rel_err", "pre-head"), ("logit_rel_err", "logits"),
                       ("logit_max_abs_err", "logit max|d|")):
        lines.append(label.ljust(14) + "".join(f"{float(reports[n][key]):>{cw}.3e}"
                                               for n in names))
    return "\n".join(lines)
