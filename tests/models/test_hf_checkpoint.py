"""Hugging Face checkpoint plumbing that needs no torch: safetensors files, config.json mapping,
refusals, and a multi-file checkpoint loaded onto 8 fake CPU devices by the logical rules."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlx
from rlx import sharding as rsh
from rlx.models import hf
from rlx.models.hf_safetensors import SafetensorsDir, SafetensorsFile, write_sharded

# ---- safetensors ----------------------------------------------------------------------------

def test_safetensors_files_agree_with_the_reference_library(tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="the `safetensors` package is the "
                             "reference for the file format (pip install -r requirements-hf.txt)")
    rng = np.random.default_rng(0)
    tensors = {"a": rng.normal(size=(3, 5)).astype(np.float32),
               "b.weight": rng.normal(size=(7,)).astype(np.float16),
               "c": rng.integers(-9, 9, size=(2, 2, 3)).astype(np.int32),
               "empty": np.zeros((0, 4), np.float32)}
    specs = [(k, v.shape, v.dtype) for k, v in tensors.items()]
    # Ours -> theirs, split over several files with an index.
    names = write_sharded(str(tmp_path), specs, tensors.__getitem__, max_file_bytes=64)
    assert len(names) > 1 and os.path.exists(tmp_path / "model.safetensors.index.json")
    theirs = {}
    for n in names:
        theirs.update(st.load_file(str(tmp_path / n)))
    assert set(theirs) == set(tensors)
    for k, v in tensors.items():
        np.testing.assert_array_equal(theirs[k], v)
    # Theirs -> ours, memory-mapped views.
    st.save_file(tensors, str(tmp_path / "ref.safetensors"))
    f = SafetensorsFile(str(tmp_path / "ref.safetensors"))
    for k, v in tensors.items():
        assert f.shape(k) == v.shape and f.dtype(k) == v.dtype
        np.testing.assert_array_equal(f.view(k), v)
    assert not f.view("a").flags.writeable  # a view of the mapped file, not a copy


# ---- config.json mapping --------------------------------------------------------------------

LLAMA31 = {  # the shape of a Llama 3.1 config.json as transformers 4.x wrote it
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 128, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "attention_bias": False, "mlp_bias": False, "hidden_act": "silu", "pretraining_tp": 1,
    "bos_token_id": 1, "eos_token_id": [2, 3],
}


def test_config_from_legacy_llama31_json():
    cfg = hf.config_from_hf(LLAMA31)
    assert (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == (64, 4, 2, 16)
    assert (cfg.rope_type, cfg.rope_factor, cfg.rope_original_max_len) == ("llama3", 8.0, 8192)
    assert (cfg.rope_theta, cfg.norm_eps, cfg.max_len) == (500000.0, 1e-5, 131072)
    assert not cfg.tie_embeddings and not cfg.qkv_bias and not cfg.o_bias
    assert (cfg.param_dtype, cfg.dtype, cfg.head_dtype) == ("bfloat16", "bfloat16", "float32")
    assert hf.config_from_hf(LLAMA31, param_dtype="float32").param_dtype == "float32"


def test_config_family_defaults_and_windows():
    base = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                num_attention_heads=4, vocab_size=64)
    q2 = hf.config_from_hf(dict(base, model_type="qwen2", use_sliding_window=True,
                                sliding_window=8, max_window_layers=2))
    assert q2.qkv_bias and not q2.o_bias and not q2.tie_embeddings and q2.n_kv_heads == 4
    assert q2.layer_windows == (0, 0, 8, 8)
    assert hf.config_from_hf(dict(base, model_type="qwen2", sliding_window=8)).layer_windows == ()
    g = hf.config_from_hf(dict(base, model_type="gemma", hidden_act="gelu"))
    # transformers runs Gemma's legacy "gelu" as the tanh approximation; so does rlx.
    assert g.mlp_activation == "gelu_tanh" and g.norm_plus_one and g.embed_scale
    assert g.tie_embeddings and g.head_dim == 256
    g2 = hf.config_from_hf(dict(base, model_type="gemma2", head_dim=8))
    assert g2.layer_windows == (4096, 0, 4096, 0) and g2.post_norms
    assert (g2.attn_softcap, g2.final_softcap, g2.query_pre_attn_scalar) == (50.0, 30.0, 256.0)
    g2off = hf.config_from_hf(dict(base, model_type="gemma2", head_dim=8,
                                   attn_logit_softcapping=None, sliding_window=None))
    assert g2off.attn_softcap == 0.0 and g2off.layer_windows == ()
    q3 = hf.config_from_hf(dict(base, model_type="qwen3", rope_parameters={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768,
        "rope_theta": 1e6}))
    assert q3.qk_norm and q3.head_dim == 128 and q3.rope_type == "yarn" and q3.rope_theta == 1e6


@pytest.mark.parametrize("family", hf.FAMILIES)
def test_config_to_hf_and_back_is_the_same_model(family):
    cfg = hf.tiny_config(family)
    back = hf.config_from_hf(hf.config_to_hf(cfg, family), param_dtype=cfg.param_dtype,
                             dtype=cfg.dtype)
    assert back == cfg
    assert hf.infer_family(cfg) == family


@pytest.mark.parametrize("change, words", [
    (dict(model_type="mistral"), ["model_type='mistral'", "llama"]),
    (dict(architectures=["LlamaForSequenceClassification"]), ["LlamaForCausalLM"]),
    (dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), ["'dynamic'", "yarn"]),
    (dict(rope_scaling={"rope_type": "linear", "factor": 2.0, "mrope_section": [1]}),
     ["mrope_section"]),
    (dict(mlp_bias=True), ["mlp_bias"]),
    (dict(quantization_config={"quant_method": "gptq"}), ["quantization_config"]),
    (dict(hidden_act="relu"), ["hidden_act='relu'", "silu"]),
    (dict(partial_rotary_factor=0.5), ["partial_rotary_factor"]),
])
def test_unsupported_configs_are_refused_by_name(change, words):
    with pytest.raises(ValueError) as e:
        hf.config_from_hf({**LLAMA31, **change})
    for w in words:
        assert w in str(e.value)


def test_model_config_validates_new_fields():
    with pytest.raises(ValueError, match=r"mlp_activation='relu'.*gelu_tanh"):
        rlx.models.Policy(rlx.models.preset("tiny", mlp_activation="relu"))
    with pytest.raises(ValueError, match=r"rope_type='ntk'.*llama3"):
        rlx.models.ModelConfig.from_config(rlx.models.preset("tiny", rope_type="ntk"))
    with pytest.raises(ValueError, match=r"layer_windows.*n_layers=4"):
        rlx.models.ModelConfig.from_config(rlx.models.preset("tiny", layer_windows=(4, 0)))
    with pytest.raises(ValueError, match=r"rope_original_max_len"):
        rlx.models.ModelConfig.from_config(rlx.models.preset("tiny", rope_type="yarn"))


def test_save_refuses_a_family_that_cannot_represent_the_model(tmp_path):
    cfg = hf.tiny_config("qwen3")
    params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype),
                          rlx.models.Policy(cfg).abstract_params())
    with pytest.raises(ValueError, match=r"'llama'.*model\.qk_norm=True"):
        hf.save(str(tmp_path), cfg, params, family="llama")
    with pytest.raises(ValueError, match=r"params lack layers/attn/q_norm/scale"):
        del params["layers"]["attn"]["q_norm"]
        hf.save(str(tmp_path), cfg, params)


# ---- checkpoints ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sharded_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("qwen3_sharded"))
    # Sizes divisible by the (2, 2, 2) mesh; a small file limit gives many safetensors files.
    hf.make_tiny_checkpoint(path, "qwen3", vocab_size=104, n_kv_heads=2, max_file_bytes=20_000)
    return path


def test_checkpoint_files_and_config(sharded_ckpt):
    files = os.listdir(sharded_ckpt)
    assert "model.safetensors.index.json" in files
    assert sum(f.endswith(".safetensors") for f in files) > 3
    with open(os.path.join(sharded_ckpt, "config.json")) as f:
        conf = json.load(f)
    assert conf["model_type"] == "qwen3" and conf["head_dim"] == 16
    assert conf["rope_scaling"]["rope_type"] == "yarn"


def test_values_follow_the_hf_layout(sharded_ckpt):
    cfg, params = hf.load(sharded_ckpt)
    r = SafetensorsDir(sharded_ckpt)
    d, h, dh = cfg.d_model, cfg.n_heads, cfg.head_dim
    q1 = np.asarray(r.view("model.layers.1.self_attn.q_proj.weight"))  # [h*dh, d]
    np.testing.assert_array_equal(params["layers"]["attn"]["q_proj"]["kernel"][1],
                                  q1.T.reshape(d, h, dh))
    o2 = np.asarray(r.view("model.layers.2.self_attn.o_proj.weight"))  # [d, h*dh]
    np.testing.assert_array_equal(params["layers"]["attn"]["o_proj"]["kernel"][2],
                                  o2.T.reshape(h, dh, d))
    np.testing.assert_array_equal(params["lm_head"], np.asarray(r.view("lm_head.weight")).T)
    np.testing.assert_array_equal(params["layers"]["mlp"]["down_proj"]["kernel"][0],
                                  np.asarray(r.view("model.layers.0.mlp.down_proj.weight")).T)


def test_sharded_checkpoint_loads_onto_8_devices_by_the_logical_rules(sharded_ckpt):
    assert jax.device_count() == 8
    mesh = rsh.make_mesh((2, 2, 2))
    cfg, params = hf.load(sharded_ckpt, mesh=mesh)
    policy = rlx.models.Policy(cfg, mesh=mesh, rules=rsh.DEFAULT_RULES)
    want = rsh.logical_to_sharding(policy.param_logical_specs(), mesh, rsh.DEFAULT_RULES)
    for (path, x), s in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(want),
                            strict=True):
        assert x.sharding.is_equivalent_to(s, x.ndim), jax.tree_util.keystr(path)
    assert rsh.num_shards(params["embed"]["embedding"]) == 4  # vocab x tensor, embed x fsdp
    assert rsh.num_shards(params["layers"]["mlp"]["gate_proj"]["kernel"]) == 4
    # Same values and logits as a single-device load.
    _, ref = hf.load(sharded_ckpt)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    tokens = jax.random.randint(jax.random.key(0), (4, 10), 0, cfg.vocab_size)
    sharded_logits = jax.jit(policy.logits)(params, tokens)
    np.testing.assert_allclose(sharded_logits, rlx.models.Policy(cfg).logits(ref, tokens),
                               atol=1e-5)


def test_load_casts_on_read_and_refuses_bad_checkpoints(sharded_ckpt, tmp_path):
    cfg, params = hf.load(sharded_ckpt, param_dtype="bfloat16")
    assert cfg.param_dtype == "bfloat16"
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
    # A tensor the rlx model would not use is refused, by name.
    path = str(tmp_path / "extra")
    hf.make_tiny_checkpoint(path, "llama")
    write_sharded(path, [("model.layers.0.mlp.gate_proj.bias", (72,), np.float32)],
                  lambda _: np.zeros(72, np.float32))
    os.rename(os.path.join(path, "model.safetensors"), os.path.join(path, "extra.safetensors"))
    hf.make_tiny_checkpoint(path, "llama")
    with pytest.raises(ValueError, match=r"gate_proj\.bias.*not used"):
        hf.load(path)
    # A config that does not match the tensors names the tensor and both shapes.
    with open(os.path.join(path, "config.json")) as f:
        conf = json.load(f)
    os.remove(os.path.join(path, "extra.safetensors"))
    conf["intermediate_size"] = 70
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(conf, f)
    with pytest.raises(ValueError, match=r"down_proj\.weight' has shape \(48, 72\)"):
        hf.load(path)


# ---- damaged files (issue 14): every error names the file, and the tensor where there is one --

def _rewrite_header(file, change):
    with open(file, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header, data = json.loads(f.read(n)), f.read()
    change(header)
    raw = json.dumps(header).encode()
    with open(file, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + data)


def _truncate_half(file):
    with open(file, "r+b") as f:
        f.truncate(os.path.getsize(file) // 2 + 4096)


def _huge_header_length(file):
    with open(file, "r+b") as f:
        f.write((2**62).to_bytes(8, "little"))


def _grow_a_shape(header):
    header["model.norm.weight"]["shape"] = [4096]


def _transpose(header):
    name = "model.layers.0.mlp.down_proj.weight"
    header[name]["shape"] = header[name]["shape"][::-1]


@pytest.mark.parametrize("damage,match", [
    (_truncate_half, r"model\.safetensors: tensor '.*': its bytes end at \d+ but the file holds "
                     r"only \d+ bytes"),
    (_huge_header_length, r"model\.safetensors: the header length 4611686018427387904 exceeds"),
    (lambda f: _rewrite_header(f, _grow_a_shape),
     r"model\.safetensors: tensor 'model\.norm\.weight': shape \(4096,\) of F32 needs 16384 "
     r"bytes but data_offsets"),
    (lambda f: _rewrite_header(f, _transpose),
     r"tensor 'model\.layers\.0\.mlp\.down_proj\.weight' has shape \(72, 48\) but config\.json "
     r"implies \(48, 72\)"),
])
def test_damaged_safetensors_are_refused_by_file_and_tensor(damage, match, tmp_path):
    path = str(tmp_path / "ckpt")
    hf.make_tiny_checkpoint(path, "llama")
    damage(os.path.join(path, "model.safetensors"))
    with pytest.raises(ValueError, match=match):
        hf.load(path)


def test_garbage_config_and_tokenizer_files_name_the_file(tmp_path):
    path = str(tmp_path / "ckpt")
    hf.make_tiny_checkpoint(path, "llama")
    with open(os.path.join(path, "config.json"), "wb") as f:
        f.write(b"\xff\xfe{not json")
    with pytest.raises(ValueError, match=r"ckpt/config\.json is not valid JSON"):
        hf.load(path)
    pytest.importorskip("tokenizers")
    from rlx.tokenizer.hf import HFTokenizer

    with open(os.path.join(path, "tokenizer.json"), "wb") as f:
        f.write(b"\xff garbage")
    with pytest.raises(ValueError, match=r"ckpt/tokenizer\.json cannot be read as a tokenizer"):
        HFTokenizer.from_dir(path)
