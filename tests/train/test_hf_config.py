"""configs/gsm8k_hf.py: the `tiny` variant end to end on CPU (a tiny random Qwen2-format
checkpoint, a tokenizer.json trained here, a local GSM8K-format TFDS dataset), and the
pretrained-init hook: the run starts from exactly the checkpoint's params."""

import json
import os

import jax
import numpy as np
import pytest

pytest.importorskip("tokenizers", reason="the tiny HF checkpoint needs `tokenizers`")

from configs import gsm8k_hf  # noqa: E402
from rlx.models import hf  # noqa: E402
from rlx.tokenizer import hf as hftok  # noqa: E402
from rlx.train import setup as setup_lib  # noqa: E402
from rlx.train import train_and_evaluate  # noqa: E402
from rlx.train.checkpoint import Checkpointer  # noqa: E402
from rlx.train.step import Run  # noqa: E402


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    cache = tmp_path_factory.mktemp("gsm8k_tiny") / "assets"
    return gsm8k_hf.get_config(f"tiny,cache_dir={cache}")


def _leaves(tree):
    return [np.asarray(x, np.float32) for x in jax.tree.leaves(tree)]


def test_real_config_needs_paths_and_loads_from_them():
    with pytest.raises(ValueError, match="needs hf_path=.*data_dir="):
        gsm8k_hf.get_config("")
    c = gsm8k_hf.get_config("hf_path=/ckpt/q,data_dir=/data,mesh=1x8x1,loss=cispo")
    assert (c.init.hf_path, c.env.data_dir, c.env.dataset, c.env.name) == (
        "/ckpt/q", "/data", "gsm8k", "qa")
    assert (c.model.dtype, c.model.head_dtype, c.sft.steps) == ("bfloat16", "float32", 0)
    assert tuple(c.mesh.shape) == (1, 8, 1) and c.rl.loss == "cispo"
    with pytest.raises(AttributeError):
        c.env.not_a_key = 1   # locked
    c = gsm8k_hf.get_config("hf_path=/ckpt/q,train_file=/d/t.jsonl,heldout_file=/d/h.jsonl")
    assert (c.env.data_dir, c.env.train_file, c.env.heldout_file) == ("", "/d/t.jsonl",
                                                                      "/d/h.jsonl")
    with pytest.raises(ValueError, match="train_file=<JSONL>,heldout_file=<JSONL>"):
        gsm8k_hf.get_config("hf_path=/ckpt/q,train_file=/d/t.jsonl")


def test_initial_params_are_the_checkpoint(tiny_config):
    s = setup_lib.build(tiny_config)
    path = tiny_config.init.hf_path
    assert isinstance(s.tokenizer, hftok.HFTokenizer)
    assert s.env.tokenizer is s.tokenizer
    with open(os.path.join(path, "config.json")) as f:
        hf_cfg = json.load(f)
    cfg = s.policy.cfg
    assert (cfg.vocab_size, cfg.d_model, cfg.n_layers) == (
        hf_cfg["vocab_size"], hf_cfg["hidden_size"], hf_cfg["num_hidden_layers"])
    assert (cfg.dtype, cfg.head_dtype, cfg.max_len) == ("bfloat16", "float32", 256)
    run = Run(s)
    params = run.init_params(jax.random.key(0))
    _, ref = hf.load(path)   # independently, onto one device
    assert jax.tree.structure(params) == jax.tree.structure(ref)
    for got, want in zip(_leaves(params), _leaves(ref), strict=True):
        np.testing.assert_array_equal(got, want)
    # ... and not what a random init would have given.
    rand = jax.jit(s.policy.init)(jax.random.key(0))
    assert any(not np.array_equal(a, b) for a, b in zip(_leaves(rand), _leaves(ref), strict=True))
    # Placed on the mesh with the run's shardings (what the donated train state expects).
    for x, sh in zip(jax.tree.leaves(params), jax.tree.leaves(run.param_sh), strict=True):
        assert x.sharding == sh


def test_tiny_run_end_to_end(tiny_config, tmp_path):
    workdir = str(tmp_path / "run")
    summary = train_and_evaluate(tiny_config, workdir)
    for name in ("metrics.jsonl", "summary.json", "summary.txt", "config.json"):
        assert os.path.exists(os.path.join(workdir, name)), name
    recs = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    sft = [r for r in recs if r["stage"] == "sft"]
    rl = [r for r in recs if r["stage"] == "rl"]
    assert len(sft) == tiny_config.sft.steps and len(rl) == tiny_config.rl.steps
    assert sft[-1]["nll"] < 0.6 * sft[0]["nll"]   # the oracle solutions are learnable
    for r in rl:
        assert {"reward", "reward/correct", "reward/format", "reward/answer_match"} <= set(r)
        # The env's parser and rlx.rewards' answer_match read the same answers.
        assert r["reward/answer_match"] == pytest.approx(r["reward/correct"])
        assert r["rounds"] == 1.0 and r["tool_calls"] == 0.0
    # After the warm start the policy answers in the asked format (so RL has a signal).
    assert max(r["reward/format"] for r in rl) > 0 and max(r["advantage_abs"] for r in rl) > 0
    assert {"train/success", "heldout/success"} <= set(summary["final"])

    # Parameters: the last two checkpoints (RL steps) differ from each other and from the
    # tiny checkpoint the run started from.
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    steps = ckpt.all_steps()
    assert steps[-1] == tiny_config.sft.steps + tiny_config.rl.steps and len(steps) == 2
    run = Run(setup_lib.build(tiny_config))
    target = run.abstract_state("rl")
    (prev, _), (last, _) = (ckpt.restore(s, target) for s in steps)
    ckpt.close()
    _, init = hf.load(tiny_config.init.hf_path)
    init, prev_p = _leaves(init), _leaves(prev["train"].params)
    last_p = _leaves(last["train"].params)
    assert all(a.shape == b.shape for a, b in zip(init, last_p, strict=True))
    changed = [not np.array_equal(a, b) for a, b in zip(init, last_p, strict=True)]
    assert all(changed), "every parameter moved away from the checkpoint"
    # RL updated the params.
    assert any(not np.array_equal(a, b) for a, b in zip(prev_p, last_p, strict=True))
    # The reference copy is the warm-start policy, not the checkpoint.
    assert any(not np.array_equal(a, b) for a, b in zip(init, _leaves(last["ref"]), strict=True))
