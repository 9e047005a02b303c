"""Parity with Hugging Face transformers (PyTorch, CPU, float32) on tiny random models built here
by transformers itself: logits on padded batches, greedy generation, and save -> transformers.

Each family exercises its own features with odd sizes: GQA ratio > 1, head_dim != hidden/heads
where the family allows it, tied and untied heads, rope scaling (llama3, linear, yarn), biases,
q/k norm, Gemma's embedding scale and (1 + w) norms, Gemma 2's soft-capping, query scalar,
sliding windows and post-norms.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need torch + transformers "
                            "(pip install torch==2.13.0 -r requirements-hf.txt)")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers "
                                   "(pip install -r requirements-hf.txt)")

import rlx  # noqa: E402
from rlx.models import hf  # noqa: E402

LOGIT_ATOL = 1e-4  # float32, the acceptance tolerance
GEN_TOKENS = 32

COMMON = dict(max_position_embeddings=256, rms_norm_eps=1e-6, bos_token_id=None,
              eos_token_id=None, pad_token_id=None)
HF_CONFIGS = {
    # Llama 3.1-style rope scaling (short original length so every band is hit), biases on
    # q/k/v/o, untied head, GQA 3, head_dim 12 != 48/6.
    "llama": lambda: transformers.LlamaConfig(
        vocab_size=97, hidden_size=48, intermediate_size=72, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2, head_dim=12, attention_bias=True,
        tie_word_embeddings=False, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16}, **COMMON),
    # Qwen2: q/k/v bias, tied head, linear rope scaling, sliding window on layers >= 1.
    "qwen2": lambda: transformers.Qwen2Config(
        vocab_size=101, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True,
        use_sliding_window=True, sliding_window=5, max_window_layers=1,
        rope_parameters={"rope_type": "linear", "rope_theta": 1e6, "factor": 2.0}, **COMMON),
    # Qwen3: q/k norm, GQA 4, head_dim 16 != 40/4, untied, yarn.
    "qwen3": lambda: transformers.Qwen3Config(
        vocab_size=103, hidden_size=40, intermediate_size=56, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, tie_word_embeddings=False,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64}, **COMMON),
    # Gemma: embedding scale, (1 + w) norms, GeGLU, multi-query, head_dim 12 != 36/4, untied
    # (a tied random Gemma this small decodes one repeated token, a weak generation check).
    "gemma": lambda: transformers.GemmaConfig(
        vocab_size=107, hidden_size=36, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=12, tie_word_embeddings=False,
        **COMMON),
    # Gemma 2: soft-capping (small caps so tanh bends), query scalar 24 != head_dim, sliding
    # window 4 on alternate layers, post-norms, tied (the head uses the unscaled table),
    # head_dim 16 != 48/4.
    "gemma2": lambda: transformers.Gemma2Config(
        vocab_size=109, hidden_size=48, intermediate_size=72, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
        attn_logit_softcapping=5.0, final_logit_softcapping=3.0, sliding_window=4,
        tie_word_embeddings=True, **COMMON),
}
FAMILIES = list(HF_CONFIGS)


def _randomize(model, family):
    """Every weight random (std 0.1, wider than the init so logits are O(1)); norm weights around
    their identity (1, or 0 for Gemma's (1 + w)). Gemma multiplies embeddings by sqrt(hidden), so
    its table gets std 0.03, or greedy decoding of the tied head just repeats the last token."""
    gen = torch.Generator().manual_seed(sum(map(ord, family)))
    gemma = family.startswith("gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = 0.03 if (gemma and "embed_tokens" in name) else 0.1
            noise = std * torch.randn(p.shape, generator=gen)
            base = 1.0 if ("norm" in name and not gemma) else 0.0
            p.copy_(base + noise)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """family -> (HF model, checkpoint dir). Llama is saved in several safetensors files."""
    out = {}
    for family, make in HF_CONFIGS.items():
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(make(), attn_implementation="eager")
        model = _randomize(model.float().eval(), family)
        path = str(tmp_path_factory.mktemp(family))
        model.save_pretrained(path, max_shard_size="40KB" if family == "llama" else "50MB")
        out[family] = (model, path)
    return out


def _batch(vocab, lengths, t, seed):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (len(lengths), t)).astype(np.int64)
    mask = (np.arange(t)[None] < np.asarray(lengths)[:, None]).astype(np.int64)
    return tokens * mask, mask  # pad id 0 after each row's end


def _hf_logits(model, tokens, mask, positions=None):
    with torch.no_grad():
        kw = {} if positions is None else {"position_ids": torch.tensor(positions)}
        return model(torch.tensor(tokens), attention_mask=torch.tensor(mask), **kw).logits.numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers_with_padding(models, family):
    model, path = models[family]
    cfg, params = hf.load(path)
    policy = rlx.models.Policy(cfg)
    logits = jax.jit(policy.logits)
    lengths = [14, 9, 5]
    # Right padding (rlx's convention: the causal mask by index keeps padding out of real rows).
    tokens, mask = _batch(cfg.vocab_size, lengths, 14, seed=1)
    ref = _hf_logits(model, tokens, mask)
    out = np.asarray(logits(params, jnp.asarray(tokens, jnp.int32)))
    valid = mask.astype(bool)
    diff_right = np.abs(out - ref)[valid].max()
    # Left padding: attn_mask marks real keys, positions count real tokens only.
    left = np.zeros_like(tokens)
    lmask = np.zeros_like(mask)
    for b, n in enumerate(lengths):
        left[b, 14 - n:], lmask[b, 14 - n:] = tokens[b, :n], 1
    pos = np.maximum(np.cumsum(lmask, 1) - 1, 0)
    ref_l = _hf_logits(model, left, lmask, pos)
    out_l = np.asarray(logits(params, jnp.asarray(left, jnp.int32),
                              attn_mask=jnp.asarray(lmask),
                              positions=jnp.asarray(pos, jnp.int32)))
    diff_left = np.abs(out_l - ref_l)[lmask.astype(bool)].max()
    print(f"\n{family}: max |logit diff| vs transformers: right-padded {diff_right:.2e}, "
          f"left-padded {diff_left:.2e}")  # shown with -s
    assert np.abs(ref[valid]).max() > 0.5  # the comparison is not between near-zero numbers
    assert diff_right < LOGIT_ATOL, diff_right
    assert diff_left < LOGIT_ATOL, diff_left


def _rlx_greedy(policy, params, prompts, lengths, steps):
    """Right-padded prompts, each row decoding from its own length."""
    max_len = prompts.shape[1] + steps
    logits, cache = jax.jit(policy.prefill, static_argnums=3)(
        params, jnp.asarray(prompts, jnp.int32), jnp.asarray(lengths, jnp.int32), max_len)
    last = logits[jnp.arange(len(lengths)), jnp.asarray(lengths) - 1]
    extend = jax.jit(policy.extend)
    out = []
    for _ in range(steps):
        nxt = jnp.argmax(last, -1).astype(jnp.int32)
        out.append(nxt)
        logits, cache = extend(params, cache, nxt[:, None])
        last = logits[:, 0]
    return np.stack([np.asarray(t) for t in out], 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_matches_transformers(models, family):
    model, path = models[family]
    cfg, params = hf.load(path)
    lengths = [7, 4, 2]
    prompts, mask = _batch(cfg.vocab_size, lengths, 7, seed=2)
    ours = _rlx_greedy(rlx.models.Policy(cfg), params, prompts, lengths, GEN_TOKENS)
    # transformers generates from left-padded prompts.
    left = np.zeros_like(prompts)
    lmask = np.zeros_like(mask)
    for b, n in enumerate(lengths):
        left[b, 7 - n:], lmask[b, 7 - n:] = prompts[b, :n], 1
    with torch.no_grad():
        gen = model.generate(torch.tensor(left), attention_mask=torch.tensor(lmask),
                             max_new_tokens=GEN_TOKENS, min_new_tokens=GEN_TOKENS,
                             do_sample=False, pad_token_id=0, eos_token_id=None)
    theirs = gen[:, 7:].numpy()
    assert theirs.shape == (3, GEN_TOKENS)
    assert len(np.unique(theirs)) > 3  # not a degenerate constant sequence
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("family", FAMILIES)
def test_import_export_round_trip_loads_in_transformers(models, family, tmp_path):
    model, path = models[family]
    cfg, params = hf.load(path)
    assert hf.save(str(tmp_path), cfg, params) == family
    again = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), attn_implementation="eager").eval()
    assert type(again) is type(model)
    tokens, mask = _batch(cfg.vocab_size, [11, 6], 11, seed=3)
    ref = _hf_logits(model, tokens, mask)
    # Same weights, same config: bit-identical logits (rlx's own logits are checked above).
    np.testing.assert_array_equal(_hf_logits(again, tokens, mask), ref)


def test_bfloat16_checkpoint_loads_and_exports(models, tmp_path):
    model, _ = models["qwen3"]
    path = str(tmp_path / "bf16")
    model.to(torch.bfloat16).save_pretrained(path)
    model.float()
    cfg, params = hf.load(path)
    assert cfg.param_dtype == "bfloat16" and cfg.head_dtype == "float32"
    w = model.model.layers[1].mlp.up_proj.weight.detach().to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(
        np.asarray(params["layers"]["mlp"]["up_proj"]["kernel"][1], np.float32), w.T)
    hf.save(str(tmp_path / "out"), cfg, params)
    again = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    assert again.dtype == torch.bfloat16
    assert torch.equal(again.model.layers[1].mlp.up_proj.weight.float(), torch.tensor(w))

