"""The training loop end to end on a very small config: config errors fail before compiling, a
run writes its outputs, and a run killed with SIGKILL resumes to the same parameters bit for bit."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from _tensorboard import read_events

from configs import toolcalc_grpo
from rlx.train import setup as setup_lib
from rlx.train.checkpoint import Checkpointer
from rlx.train.step import Run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A run small enough for CI: a 1-layer model, 6 SFT steps, 6 RL steps, checkpoints every 2.
OVERRIDES = {
    "model.n_layers": 1, "model.d_model": 32, "model.n_heads": 2, "model.n_kv_heads": 1,
    "model.head_dim": 16, "model.d_ff": 64,
    "sft.steps": 6, "sft.batch_size": 8, "sft.max_len": 384, "sft.optim.decay_steps": 6,
    "sft.optim.warmup_steps": 1,
    "rl.steps": 6, "rl.num_minibatches": 1,
    "rollout.batch_size": 8, "rollout.group_size": 4, "rollout.max_new_tokens": 12,
    "rollout.max_rounds": 2, "rollout.max_len": 384,
    "eval.num_episodes": 8, "eval.every": 3, "eval.pass_k": 2, "eval.pass_k_tasks": 4,
    "checkpoint.every": 2,
}


def small_config(**extra):
    c = toolcalc_grpo.get_config("scratch")
    c.update_from_flattened_dict({**OVERRIDES, **extra})
    return c


def _flags(**extra):
    return [f"--config.{k}={v}" for k, v in {**OVERRIDES, **extra}.items()]


@pytest.mark.parametrize("key,value,match", [
    ("rl.advantage", "grpo2", r"rl.advantage='grpo2' is not allowed; allowed: \['drgrpo'"),
    ("rl.loss", "trpo", r"rl.loss='trpo' is not allowed; allowed: \['cispo'"),
    ("rollout.group_size", 3, r"rollout.group_size=3 does not divide rollout.batch_size=8"),
    ("mesh.shape", (3, 1, 1), r"mesh.shape=\(3, 1, 1\) has 3 devices but 8"),
    ("eval.num_episodes", 12, r"eval.num_episodes=12 is not divisible by the mesh's data"),
    ("env.name", "chess", r"env.name='chess' is not allowed; allowed: \['kvlookup'"),
    ("rl.old_logprobs", "ref", r"rl.old_logprobs='ref' is not allowed"),
    # Values that used to run and produce nothing useful, or crash after compute (issue 14).
    ("checkpoint.keep", 0, r"checkpoint.keep=0 is not allowed; allowed: >= 1"),
    ("checkpoint.every", 0, r"checkpoint.every=0 is not allowed; allowed: >= 1"),
    ("optim.lr", -1.0, r"optim.lr=-1.0 is not allowed; allowed: > 0.0"),
    ("sft.optim.lr", 0.0, r"sft.optim.lr=0.0 is not allowed; allowed: > 0.0"),
    ("eval.num_episodes", 0, r"eval.num_episodes=0 is not allowed; allowed: >= 1"),
    ("rl.steps", -5, r"rl.steps=-5 is not allowed; allowed: >= 0"),
    ("rollout.batch_size", -8, r"rollout.batch_size=-8 is not allowed; allowed: >= 1"),
    ("sft.batch_size", -8, r"sft.batch_size=-8 is not allowed; allowed: >= 1"),
    ("env.fault_rate", 2.0, r"env.fault_rate=2.0 is not allowed; allowed: 0.0 <= fault_rate"),
    ("env.num_steps", 0, r"env.num_steps=0 is not allowed; allowed: 1 <= num_steps"),
    ("rollout.max_len", 16, r"rollout.max_len=16 leaves no room after prompts"),
])
def test_config_errors_fail_before_compiling(key, value, match, monkeypatch):
    compiled = []
    monkeypatch.setattr(jax.stages.Lowered, "compile",
                        lambda self, *a, **k: compiled.append(1) or pytest.fail("compiled"))
    with pytest.raises(ValueError, match=match):
        setup_lib.build(small_config(**{key: value}))
    assert not compiled


def test_a_scoring_temperature_other_than_the_sampling_one_is_refused():
    # rl.temperature follows rollout.temperature through a config reference; a config without
    # it (e.g. rebuilt from config.json) must still keep them equal.
    import ml_collections

    c = ml_collections.ConfigDict(small_config().to_dict())
    c.rl.temperature = 0.5
    with pytest.raises(ValueError, match=r"rl.temperature=0.5 differs from "
                                         r"rollout.temperature=1.0; allowed: equal"):
        setup_lib.build(c)
    c.rl.temperature, c.rollout.temperature = 1.0, 0.0   # greedy sampling: untempered scores
    setup_lib.build(c)


def test_sft_rows_too_short_for_a_demonstration_fail_before_compiling():
    with pytest.raises(ValueError, match=r"sft.max_len=16 leaves no room for a demonstration"):
        Run(setup_lib.build(small_config(**{"sft.max_len": 16})))


def test_unknown_config_key_is_an_error():
    c = toolcalc_grpo.get_config()
    with pytest.raises(AttributeError, match="learning_rate.*locked"):
        c.rl.learning_rate = 1.0


def _params(workdir):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    step = ckpt.latest_step()
    meta = ckpt.restore_meta(step)
    run = Run(setup_lib.build(small_config()))
    state, _ = ckpt.restore(step, run.abstract_state(meta["stage"]))
    ckpt.close()
    return step, meta, jax.device_get(state["train"].params)


def _train(workdir, **popen):
    """The training script in a subprocess; runs beside each other share a persistent
    compilation cache (the same executables, loaded instead of compiled again)."""
    cmd = [sys.executable, "-m", "experiments.train", "--config=configs/toolcalc_grpo.py:scratch",
           f"--workdir={workdir}", *_flags()]
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(os.path.dirname(workdir),
                                                                  "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, **popen)


def _rl_steps_logged(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if '"stage": "rl"' in line)


def test_run_outputs_and_sigkill_resume_is_bit_exact(tmp_path):
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    proc = _train(full)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    for name in ("metrics.jsonl", "summary.txt", "summary.json", "learning_curves.png",
                 "config.json"):
        assert os.path.exists(os.path.join(full, name)), name
    # TensorBoard: the scalars, `eval.print_episodes` decoded greedy episodes per split at each
    # evaluation (policy tokens marked), and the config beside the final metrics (HParams).
    tags = {v.tag for _, e in read_events(os.path.join(full, "tb")) for v in e.summary.value}
    assert {"rl/reward", "eval/heldout/success", "_hparams_/session_start_info",
            "final/heldout/success"} <= tags
    texts = [v.tensor.string_val[0].decode() for _, e in read_events(os.path.join(full, "tb"))
             for v in e.summary.value if v.tag.startswith("eval/heldout/episode")]
    assert len(texts) == 3 * 3 and all("\u27e6" in t for t in texts)   # 3 evaluations
    summary = json.load(open(os.path.join(full, "summary.json")))
    assert "heldout/success" in summary["final"] and "heldout/success" in summary["warm_start"]
    records = [json.loads(line) for line in open(os.path.join(full, "metrics.jsonl"))]
    rl = [r for r in records if r["stage"] == "rl"]
    assert [r["step"] for r in rl] == list(range(1, 7))
    # No recompilation after the first RL step, except for a row width (bucket) not seen before.
    seen = {rl[0]["row_width"]}
    for r in rl[1:]:
        if r["row_width"] in seen:
            assert r["compiles"] == 0, r
        seen.add(r["row_width"])
    assert rl[0]["compiles"] > 0
    for key in ("reward", "reward/correct", "success", "entropy", "kl_ref", "clipfrac",
                "grad_norm", "skipped", "mismatch/pearson", "mismatch/max_abs_dp",
                "mismatch/k3_kl", "mismatch/frac_ratio_out", "rounds", "tool_calls",
                "response_tokens", "rollout_tokens_per_s", "update_tokens_per_s"):
        assert key in rl[-1], key

    # Kill a second run with SIGKILL after its 3rd RL step (its last checkpoint is at step 2),
    # then restart it on the same workdir.
    proc = _train(killed)
    deadline = time.time() + 900
    while _rl_steps_logged(killed) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _rl_steps_logged(killed) < 6
    proc = _train(killed)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    assert "resumed from" in out
    # The steps redone after the restart are logged once.
    records = [json.loads(line) for line in open(os.path.join(killed, "metrics.jsonl"))]
    assert [r["step"] for r in records if r["stage"] == "rl"] == list(range(1, 7))
    assert [r["step"] for r in records if r["stage"] == "sft"] == list(range(1, 7))

    # A finished run is reported, not run again, also from a moved workdir; another config on
    # it is refused with the differing keys before anything compiles.
    from rlx.train import train_and_evaluate

    moved = str(tmp_path / "moved")
    os.rename(full, moved)
    again = train_and_evaluate(small_config(), moved)
    assert again["final"] == summary["final"]
    with pytest.raises(ValueError, match=r"(?s)different config.*rl\.steps: 6 -> 7"):
        train_and_evaluate(small_config(**{"rl.steps": 7}), moved)
    full = moved

    step_a, meta_a, params_a = _params(full)
    step_b, meta_b, params_b = _params(killed)
    assert step_a == step_b == 12 and meta_a["rl_step"] == meta_b["rl_step"] == 6
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
        np.testing.assert_array_equal(a, b)


def _progress(workdir, started):
    """What a run has reached, from its files: records logged per stage, whether an orbax write
    is in flight (its temporary directory), whether the summary exists, seconds since start."""
    counts = {"sft": 0, "rl": 0, "eval": 0}
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                stage = json.loads(line)["stage"] if line.endswith("\n") else None
                if stage in counts:
                    counts[stage] += 1
    ckpt_dir = os.path.join(workdir, "checkpoints")
    writing = os.path.isdir(ckpt_dir) and any("tmp" in n for n in os.listdir(ckpt_dir))
    return dict(counts, writing=writing, summary=os.path.exists(os.path.join(workdir,
                                                                          "summary.json")),
                elapsed=time.time() - started)


# Kill points of one run, in the order it reaches them: each kill is followed by a restart on the
# same workdir that runs to the next point. Checkpoints are at SFT steps 2 and 4, at the end of
# SFT (after the warm-start evaluation), at RL steps 2 and 4 and at the end. A point is
# (name, reached, missed): an orbax write can finish between two polls; if `missed` becomes
# true first, the run is killed there instead and the point does not count.
KILL_POINTS = (
    ("startup and compile", lambda p: p["elapsed"] > 5 and p["sft"] == 0, None),
    ("SFT step 1 (no checkpoint yet)", lambda p: p["sft"] >= 1, None),
    ("SFT step 3", lambda p: p["sft"] >= 3, None),
    ("a checkpoint write during SFT", lambda p: p["writing"], lambda p: p["sft"] >= 5),
    ("the warm-start evaluation", lambda p: p["sft"] >= 6 and p["eval"] == 0, None),
    ("RL step 1", lambda p: p["rl"] >= 1, None),
    ("RL step 2 (rollout of step 3 next)", lambda p: p["rl"] >= 2, None),
    ("just after the evaluation at RL step 3", lambda p: p["eval"] >= 2, None),
    ("a checkpoint write during RL", lambda p: p["writing"], lambda p: p["rl"] >= 5),
    ("RL step 5", lambda p: p["rl"] >= 5, None),
    ("the final evaluation", lambda p: p["rl"] >= 6 and not p["summary"], None),
)


@pytest.mark.slow
def test_sigkill_at_every_phase_resumes_bit_exact(tmp_path):
    """One run killed with SIGKILL at each of KILL_POINTS in turn (restarted after each) ends
    with the same parameters and the same logged steps as an uninterrupted run."""
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    proc = _train(full)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    hit = []
    for name, reached, missed in KILL_POINTS:
        proc, started = _train(killed), time.time()
        while proc.poll() is None:
            progress = _progress(killed, started)
            if reached(progress) or (missed is not None and missed(progress)):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                hit += [name] if reached(progress) else []
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"the run finished before '{name}': {proc.communicate()[0]}")
    print(f"killed at {len(hit)} points: {hit}")
    assert len(hit) >= 10, hit
    proc = _train(killed)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    records = [json.loads(line) for line in open(os.path.join(killed, "metrics.jsonl"))]
    for stage in ("sft", "rl"):
        assert [r["step"] for r in records if r["stage"] == stage] == list(range(1, 7)), stage
    assert [r["step"] for r in records if r["stage"] == "eval"] == [0, 3, 6]
    step_a, meta_a, params_a = _params(full)
    step_b, meta_b, params_b = _params(killed)
    assert step_a == step_b == 12 and meta_a["rl_step"] == meta_b["rl_step"] == 6
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
        np.testing.assert_array_equal(a, b)
    assert json.load(open(os.path.join(killed, "summary.json")))["final"] == json.load(
        open(os.path.join(full, "summary.json")))["final"]
