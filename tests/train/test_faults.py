"""Faults and bad input (issue 14): a damaged latest checkpoint falls back to the newest intact one,
an unwritable directory is a clear error and never a hang, unknown `--config.*` overrides are
named, and non-finite metrics keep metrics.jsonl valid JSON."""

import glob
import math
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from rlx.train import cli
from rlx.train.checkpoint import Checkpointer, CheckpointWriteError, ensure_writable
from rlx.train.metrics import MetricsWriter, read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@struct.dataclass
class _Train:  # a dataclass node, like the loop's TrainState
    w: jax.Array
    b: jax.Array


def _state(step):
    return {"train": _Train(w=jnp.arange(64, dtype=jnp.float32) * step,
                            b=jnp.full((3, 4), step, jnp.int32))}


def _saved(tmp_path, steps=(2, 4)):
    directory = str(tmp_path / "checkpoints")
    ckpt = Checkpointer(directory, max_to_keep=5)
    for step in steps:
        ckpt.save(step, _state(step), {"stage": "rl", "step": step})
    ckpt.close()
    return directory


def _data_files(step_dir):  # orbax's OCDBT data files (the merged ones hold the arrays)
    return glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)


def _truncate_data(step_dir):
    for path in _data_files(step_dir):
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)


def _overwrite_data(step_dir):
    for path in _data_files(step_dir):
        size = os.path.getsize(path)
        with open(path, "wb") as f:
            f.write(np.random.default_rng(0).bytes(size))


def _empty(step_dir):
    for entry in os.listdir(step_dir):
        path = os.path.join(step_dir, entry)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


DAMAGE = {
    "truncated data": _truncate_data,
    "overwritten data": _overwrite_data,
    "deleted state/_METADATA": lambda d: os.remove(os.path.join(d, "state", "_METADATA")),
    "garbled meta/metadata": lambda d: open(os.path.join(d, "meta", "metadata"), "w").write("{x"),
    "deleted manifests": lambda d: [os.remove(p) for p in
                                    glob.glob(os.path.join(d, "state", "**", "manifest.ocdbt"),
                                              recursive=True)],
    "emptied step directory": _empty,
}


# orbax's reader leaves an "Event loop is closed" callback behind on a step without manifests.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact(damage, tmp_path, capsys):
    directory = _saved(tmp_path)
    DAMAGE[damage](os.path.join(directory, "4"))
    ckpt = Checkpointer(directory)
    state, meta, step = ckpt.restore_newest_intact(lambda m: _state(0))
    assert step == 2 and meta == {"stage": "rl", "step": 2}
    np.testing.assert_array_equal(state["train"].w, np.arange(64, dtype=np.float32) * 2)
    err = capsys.readouterr().err
    assert f"checkpoint step 4 at {os.path.join(directory, '4')} cannot be restored" in err
    # The damaged step is kept (moved aside), and the step number is free to be written again.
    assert ckpt.all_steps() == [2]
    assert glob.glob(str(tmp_path / "corrupt_checkpoints" / "step_4-*"))
    ckpt.save(4, _state(4), {"stage": "rl", "step": 4})
    assert ckpt.latest_step() == 4
    ckpt.close()


def test_no_restorable_checkpoint_names_every_step_and_moves_nothing(tmp_path):
    directory = _saved(tmp_path)
    for step in (2, 4):
        _truncate_data(os.path.join(directory, str(step)))
    ckpt = Checkpointer(directory)
    with pytest.raises(RuntimeError, match=r"can be restored \(nothing was moved\):\n  "
                                           r"step 4 \(.*/4\): .*\n  step 2"):
        ckpt.restore_newest_intact(lambda m: _state(0))
    assert sorted(ckpt.all_steps()) == [2, 4]
    ckpt.close()


def test_no_fallback_across_stages(tmp_path):
    """A newest step that fails as a whole stage would (the state's structure changed, e.g. a
    critic added under --allow_config_change) is not skipped for an older stage's step."""
    directory = str(tmp_path / "checkpoints")
    ckpt = Checkpointer(directory)
    ckpt.save(2, _state(2), {"stage": "sft", "step": 2})
    ckpt.save(4, _state(4), {"stage": "rl", "step": 4})
    with pytest.raises(RuntimeError, match=r"step 2 .* is from stage 'sft', not 'rl': not "
                                           r"falling back across stages"):
        ckpt.restore_newest_intact(
            lambda m: {**_state(0), "critic": jnp.zeros(3)} if m["stage"] == "rl" else _state(0))
    assert sorted(ckpt.all_steps()) == [2, 4]
    ckpt.close()


def test_keep_must_be_at_least_one(tmp_path):
    with pytest.raises(ValueError, match=r"checkpoint.keep=0 is not allowed; allowed: >= 1"):
        Checkpointer(str(tmp_path / "c"), max_to_keep=0)


def test_an_unwritable_directory_names_itself(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointWriteError, match=f"cannot write to {blocker}/workdir"):
        ensure_writable(str(blocker / "workdir"))


def _can_mount_tmpfs(path):
    os.makedirs(path, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", path], capture_output=True).returncode
    return ok == 0


def test_a_checkpoint_write_to_a_read_only_disk_fails_and_exits(tmp_path):
    """The issue's hang: a save on a file system turned read-only raised, then the interpreter
    never exited (orbax threads waiting for signals). As root, a tmpfs remounted read-only
    (EROFS); otherwise the checkpoint directory made read-only (EACCES; root would ignore it)."""
    mnt = str(tmp_path / "mnt")
    as_root = _can_mount_tmpfs(mnt)
    make_read_only = (f"subprocess.run(['mount', '-o', 'remount,ro', {mnt!r}], check=True)"
                      if as_root else f"os.chmod({mnt!r} + '/ck', 0o555)")
    script = textwrap.dedent(f"""
        import os, subprocess, jax.numpy as jnp
        from rlx.train.checkpoint import Checkpointer
        ckpt = Checkpointer({mnt!r} + "/ck")
        ckpt.save(1, {{"a": jnp.ones(3)}}, {{"x": 1}})
        {make_read_only}
        ckpt.save(2, {{"a": jnp.ones(3)}}, {{"x": 1}})
    """)
    try:
        proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    finally:
        if as_root:
            subprocess.run(["umount", mnt], capture_output=True)
        else:
            os.chmod(os.path.join(mnt, "ck"), 0o755)
    assert proc.returncode != 0
    errno = 30 if as_root else 13
    assert f"CheckpointWriteError: [Errno {errno}] cannot write to {mnt}/ck" in proc.stderr


@pytest.mark.parametrize("override,message", [
    ("--config.optim.lrr=2", r"unknown key 'optim.lrr'; did you mean optim.lr\? \(keys of optim:"),
    ("--config.rl.learning_rate=1", r"unknown key 'rl.learning_rate' \(keys of rl: advantage"),
    ("--config.sft.optim.lr=1e-3 --config.rolout.max_len=9",
     r"unknown key 'rolout'; did you mean rollout\? \(keys of the config:"),
])
def test_unknown_overrides_are_named_with_what_is_allowed(override, message):
    argv = ["train", "--config=configs/toolcalc_grpo.py:quick", *override.split()]
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with pytest.raises(SystemExit, match=message):
            cli.check_overrides(argv, "configs/toolcalc_grpo.py")
        cli.check_overrides(["train", "--config.rl.steps=3", "--config.env.fault_rate=0.1"],
                            "configs/toolcalc_grpo.py")  # known keys pass
    finally:
        os.chdir(cwd)


def test_non_finite_metrics_are_json_null_and_counted(tmp_path, capsys):
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    writer.write("eval", 0, {"a": jnp.float32(jnp.nan), "b": 1.5, "c": float("inf")})
    writer.write("eval", 1, {"a": 2.0})
    writer.close()
    lines = open(tmp_path / "metrics.jsonl").read().splitlines()
    assert "NaN" not in lines[0] and "Infinity" not in lines[0]
    records = read_jsonl(str(tmp_path / "metrics.jsonl"))
    assert records[0] == {"stage": "eval", "step": 0, "a": None, "b": 1.5, "c": None}
    assert records[1]["a"] == 2.0 and writer.nonfinite == 2
    assert ("2 non-finite value(s) at eval step 0 written as null: a, c (2 in this process)"
            in capsys.readouterr().err)
    assert all(math.isfinite(v) for r in records for k, v in r.items()
               if k not in ("stage", "step") and v is not None)


def test_a_training_run_refuses_an_unwritable_workdir_before_compiling(tmp_path, monkeypatch):
    from configs import toolcalc_grpo
    from rlx.train import train_and_evaluate

    compiled = []
    monkeypatch.setattr(jax.stages.Lowered, "compile",
                        lambda self, *a, **k: compiled.append(1) or pytest.fail("compiled"))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(CheckpointWriteError, match="cannot write to"):
        train_and_evaluate(toolcalc_grpo.get_config("quick"), str(blocker / "run"))
    assert not compiled
