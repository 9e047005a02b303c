"""Multi-process training on jax.distributed: two processes of 4 CPU devices each (coordinator on
127.0.0.1) run what one process runs on 8 devices, and end with the same metrics, summary and
checkpointed parameters up to float reduction order."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from rlx.train import train_and_evaluate
from rlx.train.evaluation import restore_params
from tests.train import multiprocess_worker as worker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# The worker's small model for a short run: 2 SFT steps, 2 RL steps (an entropy term gives each
# a gradient), evaluations before and after RL, a checkpoint every step.
RUN = {**worker.OVERRIDES, "sft.steps": 2, "sft.batch_size": 8, "sft.max_len": 384,
       "sft.optim.decay_steps": 2, "sft.optim.warmup_steps": 1, "rl.steps": 2,
       "rl.num_minibatches": 1, "eval.every": 0, "checkpoint.every": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(command: list[str], processes: int) -> list[str]:
    """Runs `command + --process_id=i` in `processes` processes of 8 / processes CPU devices
    sharing one coordinator; returns their logs, or fails with the log of one that failed."""
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={8 // processes}")
    procs = [subprocess.Popen(command + [f"--coordinator=127.0.0.1:{port}",
                                         f"--num_processes={processes}", f"--process_id={i}"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(processes)]
    logs = [p.communicate(timeout=900)[0] for p in procs]
    for i, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"process {i}:\n{log[-4000:]}"
    return logs


def _records(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_two_processes_run_the_main_job_like_one(tmp_path):
    """`python -m experiments.train` in 2 processes x 4 devices vs `train_and_evaluate` here
    (1 process x 8 devices): the same SFT losses, rollouts, updates, evaluations and summary;
    process 0 alone writes the files; the checkpoint they wrote together restores here to the
    one process's parameters."""
    ref_dir, two_dir = str(tmp_path / "one"), str(tmp_path / "two")
    flags = [f"--config.{k}={v}" for k, v in RUN.items()]
    logs = _launch([sys.executable, "-m", "experiments.train",
                    "--config=configs/toolcalc_grpo.py:scratch", f"--workdir={two_dir}", *flags],
                   processes=2)
    assert "rlx run summary" in logs[0] and "rlx run summary" not in logs[1]

    ref = train_and_evaluate(worker.config(RUN), ref_dir)
    with open(os.path.join(two_dir, "summary.json")) as f:
        text = json.load(f)["text"]
    assert text.split("\n", 3)[3] == ref["text"].split("\n", 3)[3]  # past workdir and wall time

    ours, theirs = _records(two_dir), _records(ref_dir)
    assert [(r["stage"], r["step"]) for r in ours] == [(r["stage"], r["step"]) for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys()
        for key in ("reward", "success", "tool_calls", "rounds", "length", "row_width"):
            assert a.get(key) == b.get(key), (a["stage"], a["step"], key)
        for key in b:
            if key.startswith("time") or key.endswith("per_s") or key in ("stage", "compiles"):
                continue
            np.testing.assert_allclose(a[key], b[key], rtol=1e-3, atol=1e-5,
                                       err_msg=f"{b['stage']} step {b['step']} {key}")
    assert [r for r in theirs if r["stage"] == "rl"][-1]["grad_norm"] > 0   # an update happened

    _, step, params = restore_params(two_dir)
    _, ref_step, ref_params = restore_params(ref_dir)
    assert step == ref_step == RUN["sft.steps"] + RUN["rl.steps"]
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_two_processes_checkpoint_and_restore_mid_run(tmp_path):
    """`tests/train/multiprocess_worker.py`: two RL steps in 2 processes with a checkpoint
    written, restored and checked equal after step 1, against the same in this process."""
    port, procs = _free_port(), []
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    for pid in range(2):
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(HERE, "multiprocess_worker.py"), str(pid), "2",
             str(port), str(tmp_path)], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=900)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-4000:]

    ref_metrics, ref_params = worker.train(str(tmp_path / "one_process"))
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    params = np.load(tmp_path / "params.npz")
    for step, (ours, ref) in enumerate(zip(metrics, ref_metrics, strict=True)):
        assert ours.keys() == ref.keys()
        for key in ref:
            np.testing.assert_allclose(ours[key], ref[key], rtol=1e-3, atol=1e-5,
                                       err_msg=f"step {step + 1} {key}")
    assert ref_metrics[-1]["grad_norm"] > 0
    for i, ref in enumerate(ref_params):
        np.testing.assert_allclose(params[f"arr_{i}"], ref, rtol=0, atol=1e-6)
