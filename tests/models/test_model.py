"""Policy model: numpy reference forward, KV-cache equivalence, log-probs, head precision, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlx

V = rlx.models.preset("tiny").vocab_size


@pytest.fixture(scope="module")
def tiny():
    policy = rlx.models.Policy(rlx.models.preset("tiny"))
    params = policy.init(jax.random.key(0))
    return policy, params


@pytest.fixture(scope="module")
def tokens():
    return jax.random.randint(jax.random.key(1), (3, 12), 0, V)


# ---- an independent numpy implementation of the same architecture ----------------------------

def _np_rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w


def _np_rope(x, pos, theta):  # x [T,H,D]
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    ang = pos[:, None] * inv[None]
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def np_forward(cfg, params, toks):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    emb = p["embed"]["embedding"]
    out = []
    for row in np.asarray(toks):
        x = emb[row]
        t = len(row)
        pos = np.arange(t, dtype=np.float64)
        for li in range(cfg.n_layers):
            lp = jax.tree.map(lambda a, li=li: a[li], p["layers"])
            a = lp["attn"]
            h = _np_rms(x, lp["attn_norm"]["scale"], cfg.norm_eps)
            q = np.einsum("td,dhk->thk", h, a["q_proj"]["kernel"]) + a["q_proj"]["bias"]
            k = np.einsum("td,dhk->thk", h, a["k_proj"]["kernel"]) + a["k_proj"]["bias"]
            v = np.einsum("td,dhk->thk", h, a["v_proj"]["kernel"]) + a["v_proj"]["bias"]
            q, k = _np_rope(q, pos, cfg.rope_theta), _np_rope(k, pos, cfg.rope_theta)
            rep = cfg.n_heads // cfg.n_kv_heads
            k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
            s = np.einsum("thd,shd->hts", q, k) / np.sqrt(cfg.head_dim)
            s = np.where(np.tril(np.ones((t, t), bool))[None], s, -np.inf)
            pr = np.exp(s - s.max(-1, keepdims=True))
            pr /= pr.sum(-1, keepdims=True)
            o = np.einsum("hts,shd->thd", pr, v)
            x = x + np.einsum("thd,hdo->to", o, a["o_proj"]["kernel"])
            m = lp["mlp"]
            h = _np_rms(x, lp["mlp_norm"]["scale"], cfg.norm_eps)
            g, u = h @ m["gate_proj"]["kernel"], h @ m["up_proj"]["kernel"]
            x = x + (g / (1 + np.exp(-g)) * u) @ m["down_proj"]["kernel"]
        x = _np_rms(x, p["final_norm"]["scale"], cfg.norm_eps)
        out.append(x @ emb.T)
    return np.stack(out)


def test_forward_matches_numpy_reference(tiny, tokens):
    policy, params = tiny
    logits = jax.jit(policy.logits)(params, tokens)
    assert logits.dtype == jnp.float32 and logits.shape == (3, 12, V)
    np.testing.assert_allclose(logits, np_forward(policy.cfg, params, tokens), atol=1e-5)


def test_untied_head_and_qk_norm_match_numpy(tokens):
    cfg = rlx.models.preset("tiny", tie_embeddings=False, qk_norm=True, qkv_bias=False)
    policy = rlx.models.Policy(cfg)
    params = policy.init(jax.random.key(3))
    assert "lm_head" in params
    logits = policy.logits(params, tokens[:1])
    # Rebuild with numpy: qk-norm and untied head are applied by hand around the reference.
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    assert logits.shape == (1, 12, V)
    # qk_norm weights start at ones; perturbing them must change the output (the norm is used).
    p2 = jax.tree.map(lambda a: a, params)
    p2["layers"]["attn"]["q_norm"]["scale"] = params["layers"]["attn"]["q_norm"]["scale"] * 2
    assert float(jnp.abs(policy.logits(p2, tokens[:1]) - logits).max()) > 1e-4
    # The untied head is exactly hidden @ lm_head.
    hidden = policy.forward(params, tokens[:1]).hidden
    np.testing.assert_allclose(logits, np.asarray(hidden, np.float64) @ p["lm_head"], atol=1e-5)


def test_token_logprobs_match_numpy_log_softmax(tiny, tokens):
    policy, params = tiny
    logits = np.asarray(policy.logits(params, tokens), np.float64)
    ref = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    ref = np.take_along_axis(ref[:, :-1], np.asarray(tokens)[:, 1:, None], -1)[..., 0]
    lp = jax.jit(policy.token_logprobs)(params, tokens)
    assert lp.shape == tokens.shape and np.all(np.asarray(lp[:, 0]) == 0)
    np.testing.assert_allclose(lp[:, 1:], ref, atol=1e-5)
    # Chunked evaluation (5 positions at a time, with a ragged last chunk) is the same.
    lp_chunked = policy.token_logprobs(params, tokens, chunk_size=5)
    np.testing.assert_allclose(lp_chunked, lp, atol=1e-6)
    # Temperature divides the logits before the softmax.
    lp_t = policy.token_logprobs(params, tokens, temperature=0.7)
    lt = logits / 0.7
    ref_t = lt - np.log(np.exp(lt).sum(-1, keepdims=True))
    ref_t = np.take_along_axis(ref_t[:, :-1], np.asarray(tokens)[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(lp_t[:, 1:], ref_t, atol=1e-5)


def test_prefill_then_single_token_decode_equals_full_forward(tiny, tokens):
    policy, params = tiny
    full = policy.logits(params, tokens)
    lengths = jnp.array([5, 2, 8])
    logits, cache = jax.jit(policy.prefill, static_argnums=3)(params, tokens, lengths, 16)
    for b, n in enumerate([5, 2, 8]):
        np.testing.assert_allclose(logits[b, :n], full[b, :n], atol=1e-5)
    extend = jax.jit(policy.extend)
    # Feed each row its own next tokens, one at a time, at its own offset.
    for step in range(4):
        nxt = jnp.stack([tokens[b, n + step] for b, n in enumerate([5, 2, 8])])[:, None]
        logits, cache = extend(params, cache, nxt)
        for b, n in enumerate([5, 2, 8]):
            np.testing.assert_allclose(logits[b, 0], full[b, n + step], atol=1e-5)
    np.testing.assert_array_equal(cache.length, [9, 6, 12])


def test_chunk_appends_at_per_row_offsets_equal_full_forward(tiny, tokens):
    policy, params = tiny
    full = policy.logits(params, tokens)
    lengths = np.array([3, 1, 6])
    _, cache = policy.prefill(params, tokens, jnp.asarray(lengths), 20)
    extend = jax.jit(policy.extend)
    # Append chunks of different valid lengths per row (padded to 4), twice.
    pos = lengths.copy()
    for chunk_lens in ([4, 2, 3], [1, 4, 2]):
        chunk = np.zeros((3, 4), np.int32)
        for b, c in enumerate(chunk_lens):
            chunk[b, :c] = np.asarray(tokens)[b, pos[b]:pos[b] + c]
            chunk[b, c:] = 7  # padding garbage, must not matter
        logits, cache = extend(params, cache, jnp.asarray(chunk), jnp.asarray(chunk_lens))
        for b, c in enumerate(chunk_lens):
            np.testing.assert_allclose(logits[b, :c], full[b, pos[b]:pos[b] + c], atol=1e-5)
        pos += np.array(chunk_lens)
    np.testing.assert_array_equal(cache.length, pos)


def test_writes_past_the_cache_end_are_dropped(tiny, tokens):
    policy, params = tiny
    full = policy.logits(params, tokens)
    _, cache = policy.prefill(params, tokens[:, :6], jnp.array([6, 6, 6]), 8)
    before = np.asarray(cache.k)
    _, cache2 = policy.extend(params, cache, tokens[:, 6:10])  # 2 of 4 fit
    np.testing.assert_array_equal(np.asarray(cache2.k)[:, :, :6], before[:, :, :6])
    np.testing.assert_array_equal(cache2.length, [8, 8, 8])
    # The two that fit are right: decode from a fresh cache of the 8 tokens agrees.
    lg, _ = policy.prefill(params, tokens[:, :8], jnp.array([8, 8, 8]), 8)
    np.testing.assert_allclose(lg, full[:, :8], atol=1e-5)


def test_left_padding_with_mask_and_positions_matches_unpadded(tiny, tokens):
    policy, params = tiny
    row = tokens[0, :7]
    ref = policy.logits(params, row[None])[0]
    padded = jnp.concatenate([jnp.zeros((5,), jnp.int32), row])[None]
    mask = jnp.concatenate([jnp.zeros(5), jnp.ones(7)])[None]
    positions = jnp.maximum(jnp.cumsum(mask, -1) - 1, 0).astype(jnp.int32)
    out = policy.logits(params, padded, attn_mask=mask, positions=positions)[0, 5:]
    np.testing.assert_allclose(out, ref, atol=1e-5)


HV = 384  # a vocab size unlike any other matmul dimension of the tiny model


def _head_dots(policy, params, tokens, head_dtype=None):
    """(operand dtypes, result dtype) of every dot_general in the jaxpr, split head vs body."""
    jaxpr = jax.make_jaxpr(lambda p, t: policy.logits(p, t, head_dtype=head_dtype))(params, tokens)
    dots = []

    def walk(jp):
        for eqn in jp.eqns:
            if eqn.primitive.name == "dot_general":
                dots.append(([v.aval for v in eqn.invars], eqn.outvars[0].aval))
            for p in eqn.params.values():
                if hasattr(p, "jaxpr"):
                    walk(p.jaxpr if hasattr(p.jaxpr, "eqns") else p.jaxpr.jaxpr)
    walk(jaxpr.jaxpr)
    # The tied head is the only matmul with the [V, D] embedding table as an operand.
    is_head = lambda ins: any(a.shape == (HV, policy.cfg.d_model) for a in ins)
    head = [([a.dtype for a in ins], out) for ins, out in dots if is_head(ins)]
    body = [([a.dtype for a in ins], out) for ins, out in dots if not is_head(ins)]
    return head, body


@pytest.mark.parametrize("head_dtype", ["bfloat16", "float16", "float32"])
def test_head_dtype_controls_only_the_head_matmul(tokens, head_dtype):
    policy = rlx.models.Policy(rlx.models.preset("tiny", vocab_size=HV))
    params = policy.init(jax.random.key(0))
    tokens = tokens % HV
    p = rlx.models.Policy(rlx.models.preset("tiny", vocab_size=HV, head_dtype=head_dtype))
    head, body = _head_dots(p, params, tokens)
    assert len(head) == 1 and len(body) > 0
    (in_dtypes, out_aval), = head
    assert all(d == jnp.dtype(head_dtype) for d in in_dtypes) and out_aval.dtype == head_dtype
    assert all(all(d == jnp.float32 for d in ins) for ins, _ in body)
    # The compiled HLO carries the head matmul in that dtype too.
    hlo = jax.jit(p.logits).lower(params, tokens).as_text()
    short = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}[head_dtype]
    assert any("dot_general" in line and f"tensor<3x12x{HV}x{short}>" in line
               for line in hlo.splitlines())
    # The call-time override (the sampler's knob) does the same on an f32 policy.
    head2, _ = _head_dots(policy, params, tokens, head_dtype=head_dtype)
    assert head2[0][1].dtype == head_dtype
    # Logits always leave as float32.
    assert p.logits(params, tokens).dtype == jnp.float32


def test_bf16_head_differs_measurably_but_little(tiny, tokens):
    policy, params = tiny
    lp32 = policy.token_logprobs(params, tokens)
    lp16 = policy.token_logprobs(params, tokens, head_dtype="bfloat16")
    diff = float(jnp.abs(lp32 - lp16).max())
    assert 1e-6 < diff < 0.1


def _np_log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.mark.parametrize("head_dtype", ["bfloat16", "float16"])
def test_compiled_low_precision_head_rounds_like_numpy(tiny, tokens, head_dtype):
    """A sampler's program (forward pass, LM head, log-softmax, compiled as one) rounds the
    head's inputs, weights and logits to `head_dtype`: XLA may not run a declared bf16 step in
    f32 (on CPU it did, fused into the log-softmax, before rlx rounded explicitly)."""
    import ml_dtypes

    policy, params = tiny
    narrow = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}[head_dtype]
    log_probs = np.asarray(jax.jit(lambda p, t: jax.nn.log_softmax(
        policy.head(p, policy.forward(p, t).hidden, head_dtype), axis=-1))(params, tokens))
    hidden = np.asarray(jax.jit(policy.forward)(params, tokens).hidden, np.float64)
    table = np.asarray(params["embed"]["embedding"], np.float64)
    to_narrow = lambda x: x.astype(narrow).astype(np.float64)
    logits = to_narrow(to_narrow(hidden) @ to_narrow(table).T)
    error = np.abs(log_probs - _np_log_softmax(logits))
    f32_error = np.abs(_np_log_softmax(hidden @ table.T) - _np_log_softmax(logits))
    # The median token matches to f32 round-off (a few logits sit on a rounding boundary that
    # float64 and XLA's float32 sums resolve differently); an f32 head is ~1000x further off.
    assert np.median(error) < 1e-6 < np.median(f32_error)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_bodies_run_close_to_float32(tiny, tokens, dtype):
    policy, params = tiny
    cfg = rlx.models.preset("tiny", dtype=dtype, param_dtype=dtype, head_dtype=dtype)
    p = rlx.models.Policy(cfg)
    params_lp = jax.tree.map(lambda a: a.astype(dtype), params)
    assert all(a.dtype == dtype for a in jax.tree.leaves(p.init(jax.random.key(0))))
    lg = p.logits(params_lp, tokens)
    assert lg.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(lg)))
    ref = policy.logits(params, tokens)
    assert float(jnp.abs(lg - ref).max()) < 0.1
    cache = p.init_cache(3, 16)
    assert cache.k.dtype == dtype


def test_return_layers_gives_the_residual_stream(tiny, tokens):
    policy, params = tiny
    out = policy.forward(params, tokens, return_layers=True)
    assert out.layers.shape == (5, 3, 12, 128)
    emb = np.asarray(params["embed"]["embedding"])[np.asarray(tokens)]
    np.testing.assert_allclose(out.layers[0], emb, atol=0)
    rms = lambda x: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(out.hidden, rms(np.asarray(out.layers[-1])), atol=1e-5)


def test_critic_values():
    critic = rlx.models.Critic(rlx.models.preset("tiny"))
    params = critic.init(jax.random.key(0))
    toks = jnp.ones((2, 5), jnp.int32)
    vals = critic.values(params, toks)
    assert vals.shape == (2, 5) and vals.dtype == jnp.float32
    g = jax.grad(lambda p: critic.values(p, toks).sum())(params)
    assert float(jnp.abs(g["value_head"]["kernel"]).sum()) > 0
    with pytest.raises(TypeError, match="value head"):
        critic.logits(params, toks)


def test_preset_sizes():
    n = {name: rlx.models.ModelConfig.from_config(rlx.models.preset(name)).num_params()
         for name in rlx.models.preset_names()}
    assert 0.8e6 < n["tiny"] < 1.3e6
    assert 8e6 < n["small"] < 13e6
    assert 80e6 < n["base"] < 130e6
    policy = rlx.models.Policy(rlx.models.preset("tiny"))
    assert sum(a.size for a in jax.tree.leaves(policy.abstract_params())) == n["tiny"]


def test_config_errors_name_the_key_and_allowed_values():
    with pytest.raises(ValueError, match=r"model.head_dtype='fp32'.*allowed.*bfloat16"):
        rlx.models.Policy(rlx.models.preset("tiny", head_dtype="fp32"))
    with pytest.raises(ValueError, match=r"model.n_heads=4 is not divisible by model.n_kv_heads=3"):
        rlx.models.Policy(rlx.models.preset("tiny", n_kv_heads=3))
    with pytest.raises(KeyError, match=r"model.hidden_size is not a model field"):
        rlx.models.preset("tiny", hidden_size=3)
    with pytest.raises(ValueError, match=r"preset 'huge' is unknown.*'small'"):
        rlx.models.preset("huge")
    policy = rlx.models.Policy(rlx.models.preset("tiny"))
    with pytest.raises(ValueError, match="head_dtype='int8'"):
        policy.head({}, jnp.zeros((1, 1, 128)), "int8")


def test_token_stats_entropy_matches_numpy(tiny, tokens):
    policy, params = tiny
    logits = np.asarray(policy.logits(params, tokens), np.float64) / 0.8
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ent_ref = -(p * np.log(p)).sum(-1)[:, :-1]
    for chunk in (None, 5):
        lp, ent = policy.token_stats(params, tokens, temperature=0.8, chunk_size=chunk)
        np.testing.assert_allclose(ent[:, 1:], ent_ref, atol=1e-5)
        assert np.all(np.asarray(ent[:, 0]) == 0)
        np.testing.assert_allclose(lp, policy.token_logprobs(params, tokens, temperature=0.8),
                                   atol=1e-6)
