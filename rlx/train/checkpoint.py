"""Checkpoints with orbax: the train state (params, optimizer state, counters, reference
params) as a sharded pytree, plus JSON metadata (stage, SFT and RL step counts, warm-start
evaluation). The data position and every random key derive from the config's seed and those
step counts (`fold_in(key, step)`), so they need no storage of their own; the config itself is
saved beside the checkpoints as `config.json`.

A run restarted on the same workdir restores the latest checkpoint into the shardings of a freshly
built (abstract) state and continues where it stopped. A step that cannot be restored (a truncated
file, lost metadata) is named with its path and the reason, moved aside to
`<workdir>/corrupt_checkpoints/` (nothing is deleted) and the next older step is tried.

Writes are checked before orbax starts them: a directory that cannot be written is a
`CheckpointWriteError` naming it, raised before any background thread exists (an orbax save that
fails midway leaves non-daemon threads waiting, and the process would never exit).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointWriteError(OSError):
    """A checkpoint (or workdir) directory that cannot be written."""


def ensure_writable(directory: str) -> None:
    """Creates `directory` if needed and writes and removes a probe file in it; raises
    `CheckpointWriteError` naming the directory if any of that fails."""
    probe = os.path.join(directory, f".write-probe-{uuid.uuid4().hex}")
    try:
        os.makedirs(directory, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise CheckpointWriteError(e.errno, f"cannot write to {directory}: "
                                   f"{e.strerror or e}") from e


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with items `state` (pytree) and `meta` (JSON)."""

    def __init__(self, directory: str, *, max_to_keep: int = 3):
        if max_to_keep < 1:
            raise ValueError(f"checkpoint.keep={max_to_keep} is not allowed; allowed: >= 1")
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict, *, wait: bool = True) -> None:
        ensure_writable(self.directory)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        if wait:
            self.manager.wait_until_finished()

    def restore(self, step: int | None, target: Any) -> tuple[Any, dict]:
        """Restores `step` (None: latest) into the structure, dtypes and shardings of `target`
        (a pytree of arrays or `jax.ShapeDtypeStruct`s with shardings)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(_abstract, target)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out.state, out.meta

    def restore_newest_intact(self, target_of: Callable[[dict], Any]) -> tuple[Any, dict, int]:
        """(state, meta, step) of the newest step that restores; `target_of(meta)` gives the
        restore target of a step from its metadata. Each step that fails is reported on stderr;
        once an older one restores, the failed ones are moved aside (the run will write those
        step numbers again).

        The fallback stays within the stage (`meta["stage"]`) of the newest step: when every
        step of that stage fails -- as it does when the state's structure changed, not the
        files -- nothing is moved and a RuntimeError names every step and its reason. Also
        raised when no step restores; FileNotFoundError when there are none."""
        failed: list[tuple[int, str]] = []
        stage = None  # the stage of the newest step, where its metadata is readable
        for step in sorted(self.all_steps(), reverse=True):
            path = os.path.join(self.directory, str(step))
            meta = None
            try:
                meta = self.restore_meta(step)
                if stage is not None and meta.get("stage") != stage:
                    failed.append((step, f"step {step} ({path}) is from stage "
                                         f"{meta.get('stage')!r}, not {stage!r}: not falling back "
                                         f"across stages"))
                    break
                state, meta = self.restore(step, target_of(meta))
            except Exception as e:  # noqa: BLE001 -- any failure: report it, try an older step
                lines = str(e).strip().splitlines()
                reason = f"{type(e).__name__}: {lines[0] if lines else ''}"
                failed.append((step, f"step {step} ({path}): {reason}"))
                print(f"checkpoint step {step} at {path} cannot be restored ({reason}); "
                      f"trying an older step", file=sys.stderr, flush=True)
                if stage is None and not failed[:-1] and isinstance(meta, dict):
                    stage = meta.get("stage")
                continue
            for bad, _ in failed:
                print(f"checkpoint step {bad} moved to {self._move_aside(bad)}; resuming from "
                      f"step {step}", file=sys.stderr, flush=True)
            return state, meta, step
        if failed:
            raise RuntimeError(f"no checkpoint in {self.directory} can be restored (nothing was "
                               f"moved):\n  " + "\n  ".join(reason for _, reason in failed))
        raise FileNotFoundError(f"no checkpoint in {self.directory}")

    def _move_aside(self, step: int) -> str:
        """Moves a step directory to `<parent>/corrupt_checkpoints/step_<step>-<time>`."""
        dest = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints",
                            f"step_{step}-{time.strftime('%Y%m%dT%H%M%S')}")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.move(os.path.join(self.directory, str(step)), dest)
        self.manager.reload()
        return dest

    def restore_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return out.meta

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x
