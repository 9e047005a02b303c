"""precision_probe against numpy statistics of two independently run forwards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_mismatch import np_mismatch

import rlx
from rlx.diagnostics import compare_precisions, format_reports, precision_probe

B, T = 2, 16
TEMPERATURE = 0.5


@pytest.fixture(scope="module")
def model():
    cfg = rlx.models.preset("tiny", n_layers=2, d_model=64, d_ff=128, vocab_size=128)
    params = jax.jit(rlx.models.Policy(cfg).init)(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, 128)
    return cfg, params, tokens


def _variant(cfg, **changes):
    out = cfg.copy_and_resolve_references()
    out.update(changes)
    return out


def _reference(cfg, params, tokens, temperature):
    """Each side run directly through the Policy API, statistics in numpy."""
    policy = rlx.models.Policy(cfg)

    @jax.jit
    def run(params):
        params = jax.tree.map(lambda p: p.astype(policy.cfg.jnp_param_dtype), params)
        out = policy.forward(params, tokens, return_layers=True)
        logits = policy.head(params, out.hidden)
        lp = policy.token_logprobs(params, tokens, temperature=temperature)
        return [jnp.asarray(x, jnp.float32) for x in (out.layers, out.hidden, logits, lp)]

    return [np.asarray(x, np.float64) for x in run(params)]


def _rel(a, b, axes):
    return np.sqrt(((a - b) ** 2).sum(axes) / (a ** 2).sum(axes))


@pytest.fixture(scope="module")
def reference_a(model):
    cfg, params, tokens = model
    return _reference(cfg, params, tokens, TEMPERATURE)


@pytest.mark.parametrize("changes", [
    dict(head_dtype="bfloat16"),
    dict(dtype="bfloat16", param_dtype="bfloat16", head_dtype="bfloat16"),
])
def test_probe_matches_reference(model, reference_a, changes):
    cfg, params, tokens = model
    cfg_b = _variant(cfg, **changes)
    got = precision_probe(cfg, cfg_b, params, tokens, jax.random.key(2), temperature=TEMPERATURE)
    la, ha, za, lpa = reference_a
    lb, hb, zb, lpb = _reference(cfg_b, params, tokens, TEMPERATURE)
    np.testing.assert_allclose(np.asarray(got["layer_rel_err"]), _rel(la, lb, (1, 2, 3)),
                               rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(float(got["hidden_rel_err"]), _rel(ha, hb, None), rtol=1e-5,
                               atol=1e-9)
    np.testing.assert_allclose(float(got["logit_rel_err"]), _rel(za, zb, None), rtol=1e-5)
    np.testing.assert_allclose(float(got["logit_max_abs_err"]), np.abs(za - zb).max(), rtol=1e-5)
    # Teacher-forced metrics against Policy.token_logprobs (entry t = log p(tokens[t] | <t)).
    want = np_mismatch(lpa[:, 1:], lpb[:, 1:], np.ones((B, T - 1)))
    for k, v in want.items():
        np.testing.assert_allclose(float(got["teacher_forced"][k]), v, rtol=1e-4, atol=1e-7,
                                   err_msg=k)
    assert float(got["sampled"]["n_tokens"]) == B * T
    if changes == dict(head_dtype="bfloat16"):  # the body is untouched: only the head differs
        assert not np.any(np.asarray(got["layer_rel_err"])) and float(got["hidden_rel_err"]) == 0
    else:
        assert np.all(np.asarray(got["layer_rel_err"]) > 0)
    assert 0 < float(got["logit_rel_err"]) < 0.05  # a bf16-sized error, not a broken forward


def test_identical_settings_give_no_mismatch(model):
    cfg, params, tokens = model
    got = precision_probe(cfg, cfg, params, tokens)
    assert float(got["logit_max_abs_err"]) == 0.0 and not np.any(got["layer_rel_err"])
    assert float(got["sampled"]["k3_kl"]) == 0.0
    np.testing.assert_allclose(float(got["sampled"]["pearson"]), 1.0, rtol=1e-6)


def test_probe_refuses_different_models(model):
    cfg, params, tokens = model
    with pytest.raises(ValueError, match="model.n_layers"):
        precision_probe(cfg, _variant(cfg, n_layers=3), params, tokens)


def test_compare_and_format(model):
    cfg, params, tokens = model
    variants = {"bf16 head": dict(head_dtype="bfloat16")}
    # Same settings, shapes and temperature as test_probe_matches_reference[changes0]: the
    # compiled probe is reused.
    reports = compare_precisions(cfg, params, tokens, jax.random.key(2), variants=variants,
                                 temperature=TEMPERATURE)
    text = format_reports(reports)
    assert "bf16 head" in text and "layer 1 out" in text and "pre-head" in text


def test_compare_takes_a_trainer_setting_and_names_unknown_fields(model):
    cfg, params, tokens = model
    bf16 = dict(dtype="bfloat16", param_dtype="bfloat16", head_dtype="bfloat16")
    reports = compare_precisions(cfg, params, tokens, trainer=bf16, variants={"same": bf16})
    assert float(reports["same"]["logit_max_abs_err"]) == 0.0
    with pytest.raises(ValueError, match=r"trainer: precision fields \['head'\] are unknown"):
        compare_precisions(cfg, params, tokens, trainer=dict(head="float32"))
    with pytest.raises(ValueError, match=r"fast: .*\['dtypes'\].*allowed.*head_dtype"):
        compare_precisions(cfg, params, tokens, variants={"fast": dict(dtypes="bfloat16")})
