"""Metrics: per-batch episode means, JSON lines + TensorBoard event files (tensorboardX, no
TensorFlow), progress through tqdm, and at the end a PNG of the learning curves."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from rlx.rollout.trajectory import Trajectory

Array = jax.Array


def to_python(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Device scalars -> Python floats (one transfer for the whole dict)."""
    host = jax.device_get(dict(metrics))
    return {k: float(np.asarray(v)) for k, v in host.items() if np.asarray(v).size == 1}


def episode_metrics(traj: Trajectory, total: Array, components: dict[str, Array]) -> dict:
    """Per-batch means: reward and components, success, lengths, rounds, tool calls, hacks."""
    info = traj.info
    out = {"reward": jnp.mean(total)}
    out.update({f"reward/{k}": jnp.mean(v) for k, v in components.items()})
    if "correct" in info:
        out["success"] = jnp.mean(info["correct"].astype(jnp.float32))
    if "used_forbidden_tool" in info:
        out["hack_rate"] = jnp.mean(info["used_forbidden_tool"].astype(jnp.float32))
    if "invalid_calls" in info:
        out["invalid_calls"] = jnp.mean(info["invalid_calls"].astype(jnp.float32))
    out["response_tokens"] = jnp.mean(jnp.sum(traj.policy_mask, -1).astype(jnp.float32))
    out["length"] = jnp.mean(traj.length.astype(jnp.float32))
    out["rounds"] = jnp.mean(traj.rounds.astype(jnp.float32))
    out["tool_calls"] = jnp.mean(traj.tool_calls.astype(jnp.float32))
    out["truncated"] = jnp.mean(traj.truncated.astype(jnp.float32))
    return out


class MetricsWriter:
    """Appends `{"stage", "step", **metrics}` to `<workdir>/metrics.jsonl` and to TensorBoard
    (`<workdir>/tb`, tags `<stage>/<name>`). Resumed runs append to the same files.

    Non-finite values (NaN, inf) are written as JSON `null`, so every line stays valid JSON; each
    record that has some says so on stderr, and `nonfinite` counts them in this process. With
    `files=False` (the other processes of a multi-process run) it writes nothing and only
    returns the values."""

    def __init__(self, workdir: str, *, tensorboard: bool = True, files: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = self._tb = None
        self.nonfinite = 0
        if files:
            os.makedirs(workdir, exist_ok=True)
            self._file = open(self.path, "a")
        if tensorboard and files:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, stage: str, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        values = to_python(metrics)
        bad = sorted(k for k, v in values.items() if not math.isfinite(v))
        if bad and self._file is not None:
            self.nonfinite += len(bad)
            print(f"metrics: {len(bad)} non-finite value(s) at {stage} step {step} written as "
                  f"null: {', '.join(bad)} ({self.nonfinite} in this process)", file=sys.stderr,
                  flush=True)
        record = {k: (v if math.isfinite(v) else None) for k, v in values.items()}
        if self._file is not None:
            self._file.write(json.dumps({"stage": stage, "step": int(step), **record},
                                        allow_nan=False) + "\n")
            self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                if math.isfinite(v):
                    self._tb.add_scalar(f"{stage}/{k}", v, int(step))
        return values

    def text(self, tag: str, step: int, text: str) -> None:
        """A text entry (e.g. a decoded episode) in TensorBoard's Text tab."""
        if self._tb is not None:
            self._tb.add_text(tag, text, int(step))

    def hparams(self, config: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """The run's flattened config beside its final `metrics` (TensorBoard's HParams tab, for
        comparing runs); values that are not numbers, strings or bools are written as strings."""
        if self._tb is None:
            return
        flat = {k: v if isinstance(v, bool | int | float | str) else str(v)
                for k, v in _flatten(config).items()}
        self._tb.add_hparams(flat, {k: v for k, v in metrics.items() if math.isfinite(v)},
                             name="hparams")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


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
    """A stage's progress through tqdm: a live bar on a terminal; elsewhere (CI logs, nohup) the
    same line -- steps, elapsed, ETA, s/step and the chosen metrics -- printed once every
    `interval` seconds and at the last step. The clock starts at the first step this process
    runs (after compiling, and after a resume), so compile time does not skew the rate."""

    def __init__(self, total: int, label: str, keys: Sequence[str] = (), stream=None,
                 interval: float = 30.0):
        self.total, self.label, self.keys = total, label, tuple(keys)
        self.stream = stream or sys.stderr
        self.interval, self.last_print = interval, -float("inf")
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.first: int | None = None      # the first step this process ran
        self.t0 = 0.0
        self.bar: tqdm | None = None

    def update(self, step: int, metrics: Mapping[str, float]) -> None:
        now = time.perf_counter()
        shown = ", ".join(f"{k}={metrics[k]:.3g}" for k in self.keys if k in metrics)
        if self.first is None:
            self.first, self.t0 = step, now
            if self.tty:
                self.bar = tqdm(total=self.total, initial=step, desc=self.label, unit="step",
                                postfix=shown, file=self.stream, dynamic_ncols=True)
        if self.bar is not None:
            self.bar.set_postfix_str(shown, refresh=False)
            self.bar.update(step - self.bar.n)
            if step >= self.total:
                self.bar.close()
        elif now - self.last_print >= self.interval or step >= self.total:
            line = tqdm.format_meter(step, self.total, now - self.t0, prefix=self.label,
                                     unit="step", postfix=shown, initial=self.first, ascii=True)
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_print = now


CARD_KEYS = ("success", "tool_calls", "invalid_calls")


def training_card(workdir: str, recipe: str) -> dict:
    """What a shipped checkpoint's `metrics.json` records of the run that made it: the recipe,
    its steps and wall time, the supervised loss per 100 steps, and every evaluation (success,
    pass@k, tool calls, invalid calls per evaluation set)."""
    records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    nll = [r["nll"] for r in records if r["stage"] == "sft" and r.get("nll") is not None]
    evaluations = [
        {"stage": r["stage"], "step": r["step"],
         **{k: round(v, 4) for k, v in sorted(r.items())
            if (k.rpartition("/")[2] in CARD_KEYS or "/pass@" in k) and v is not None}}
        for r in records if r["stage"] in ("sft_eval", "eval")]
    card = {"recipe": recipe, "steps": len(nll),
            "nll_mean_per_100_steps": [round(float(np.mean(nll[i:i + 100])), 3)
                                       for i in range(0, len(nll), 100)],
            "evaluations": evaluations}
    summary = os.path.join(workdir, "summary.json")
    if os.path.exists(summary):
        with open(summary) as f:
            card["wall_seconds"] = round(json.load(f)["wall_seconds"])
    return card


def smooth(ys: Sequence[float], frac: float = 0.1) -> np.ndarray:
    """An exponential moving average whose time constant is `frac` of the series (bias-corrected,
    so the first points are not pulled toward 0)."""
    ys = np.asarray(ys, np.float64)
    alpha = 1.0 / max(1.0, frac * len(ys))
    out, acc, norm = np.empty_like(ys), 0.0, 0.0
    for i, y in enumerate(ys):
        acc, norm = (1 - alpha) * acc + alpha * y, (1 - alpha) * norm + alpha
        out[i] = acc / norm
    return out


def plot_curves(records: list[dict], path: str,
                panels: Sequence[tuple[str, str, Sequence[str]]], *, title: str = "",
                columns: int = 4) -> None:
    """Writes a PNG with one panel per (title, stage, metric keys) from JSONL records: the raw
    points faint, an exponential moving average on top (series longer than 20 points), panels
    without data left out, `columns` panels per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []
    for panel_title, stage, keys in panels:
        lines = []
        for key in keys:
            pts = sorted((r["step"], r[key]) for r in records
                         if r.get("stage") == stage and r.get(key) is not None)
            if pts:
                lines.append((key, *zip(*pts, strict=True)))
        if lines:
            series.append((panel_title, stage, lines))
    if not series:
        series = [("no metrics recorded", "", [])]
    cols = min(columns, len(series))
    rows = -(-len(series) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat[len(series):]:
        ax.set_visible(False)
    for ax, (panel_title, stage, lines) in zip(axes.flat, series, strict=False):
        for i, (key, xs, ys) in enumerate(lines):
            color = f"C{i}"
            if len(xs) > 20:
                ax.plot(xs, ys, ".", color=color, alpha=0.2, markersize=3)
                ax.plot(xs, smooth(ys), color=color, label=key)
            else:
                ax.plot(xs, ys, marker="o", color=color, label=key)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(f"{stage} step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
