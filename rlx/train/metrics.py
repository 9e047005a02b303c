"""Metrics: JSON lines + TensorBoard event files (tensorboardX, no TensorFlow), a console progress
bar, and at the end a PNG of the learning curves."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np


def to_python(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Device scalars -> Python floats (one transfer for the whole dict)."""
    host = jax.device_get(dict(metrics))
    return {k: float(np.asarray(v)) for k, v in host.items() if np.asarray(v).size == 1}


class MetricsWriter:
    """Appends `{"stage", "step", **metrics}` to `<workdir>/metrics.jsonl` and to TensorBoard
    (`<workdir>/tb`, tags `<stage>/<name>`). Resumed runs append to the same files.

    Non-finite values (NaN, inf) are written as JSON `null`, so every line stays valid JSON; each
    record that has some says so on stderr, and `nonfinite` counts them over the run."""

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = open(self.path, "a")
        self._tb = None
        self.nonfinite = 0
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, stage: str, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        values = to_python(metrics)
        bad = sorted(k for k, v in values.items() if not math.isfinite(v))
        if bad:
            self.nonfinite += len(bad)
            print(f"metrics: {len(bad)} non-finite value(s) at {stage} step {step} written as "
                  f"null: {', '.join(bad)} ({self.nonfinite} in this run)", file=sys.stderr,
                  flush=True)
        record = {k: (v if math.isfinite(v) else None) for k, v in values.items()}
        self._file.write(json.dumps({"stage": stage, "step": int(step), **record},
                                    allow_nan=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                if math.isfinite(v):
                    self._tb.add_scalar(f"{stage}/{k}", v, int(step))
        return values

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def trim_jsonl(path: str, keep) -> None:
    """Rewrites a JSONL file keeping the records for which `keep(record)` is true."""
    if not os.path.exists(path):
        return
    records = [r for r in read_jsonl(path) if keep(r)]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


class Progress:
    """A one-line console progress bar with ETA and a few chosen metrics. When the stream is not
    a terminal (CI logs, nohup) it prints a plain line every `interval` seconds instead."""

    def __init__(self, total: int, label: str, keys: Sequence[str] = (), stream=None,
                 interval: float = 30.0):
        self.total, self.label, self.keys = total, label, tuple(keys)
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.first: int | None = None      # the step this process started from (resume)
        self.interval, self.last_print = interval, -float("inf")
        self.tty = getattr(self.stream, "isatty", lambda: False)()

    def update(self, step: int, metrics: Mapping[str, float]) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first, self.t0 = step - 1, now   # time from the first step on (after compile)
        frac = step / max(self.total, 1)
        bar = "#" * int(24 * frac) + "." * (24 - int(24 * frac))
        elapsed = now - self.t0
        done = step - self.first - 1
        eta = elapsed / done * (self.total - step) if done > 0 else float("nan")
        shown = "  ".join(f"{k}={metrics[k]:.3g}" for k in self.keys if k in metrics)
        line = (f"{self.label} [{bar}] {step}/{self.total} {elapsed:6.0f}s "
                f"ETA {_clock(eta)}  {shown}")
        if self.tty:
            self.stream.write("\r" + line[:160])
            if step >= self.total:
                self.stream.write("\n")
        elif now - self.last_print >= self.interval or step >= self.total:
            self.stream.write(line + "\n")
            self.last_print = now
        self.stream.flush()


def _clock(seconds: float) -> str:
    if seconds != seconds:  # NaN: no rate yet
        return "--:--"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"


def plot_curves(records: list[dict], path: str,
                panels: Sequence[tuple[str, str, Sequence[str]]]) -> None:
    """Writes a PNG with one panel per (title, stage, metric keys) from JSONL records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, stage, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            pts = [(r["step"], r[key]) for r in records
                   if r.get("stage") == stage and r.get(key) is not None]
            if pts:
                xs, ys = zip(*sorted(pts), strict=True)
                ax.plot(xs, ys, label=key, marker="." if len(xs) < 30 else None)
        ax.set_title(title)
        ax.set_xlabel(f"{stage} step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
