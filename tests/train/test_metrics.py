"""The training card a shipped checkpoint carries (`metrics.json`), from a run's metrics log;
what the metrics writer puts in TensorBoard."""

import json
import os

import numpy as np
from _tensorboard import read_events

from rlx.train.metrics import MetricsWriter, training_card


def test_training_card_summarizes_the_log(tmp_path):
    rng = np.random.default_rng(0)
    nll = rng.uniform(0.5, 3.0, size=250)
    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    for step, value in enumerate(nll, 1):
        writer.write("sft", step, {"nll": value, "grad_norm": 1.0})
        if step == 200:
            writer.write("sft_eval", step, {"train/success": 0.25, "heldout/success": 0.125,
                                            "heldout/tool_calls": 1.5, "train/length": 99.0})
    writer.write("eval", 0, {"train/success": 0.5, "heldout:tools/success": 0.0625,
                             "heldout/pass@8": 0.25, "heldout/rounds": 3.0})
    writer.close()
    with open(os.path.join(tmp_path, "summary.json"), "w") as f:
        json.dump({"wall_seconds": 61.7}, f)

    card = training_card(str(tmp_path), "python -m experiments.train --config=x")
    assert card["recipe"] == "python -m experiments.train --config=x"
    assert card["steps"] == 250 and card["wall_seconds"] == 62
    np.testing.assert_allclose(card["nll_mean_per_100_steps"],
                               [nll[:100].mean(), nll[100:200].mean(), nll[200:].mean()],
                               atol=5e-4)
    assert card["evaluations"] == [
        {"stage": "sft_eval", "step": 200, "heldout/success": 0.125, "heldout/tool_calls": 1.5,
         "train/success": 0.25},
        {"stage": "eval", "step": 0, "heldout/pass@8": 0.25, "heldout:tools/success": 0.0625,
         "train/success": 0.5}]


def test_tensorboard_gets_scalars_text_and_hparams(tmp_path):
    writer = MetricsWriter(str(tmp_path))
    writer.write("eval", 3, {"heldout/success": 0.25})
    writer.text("eval/heldout/episode0", 3, "```\nadd(2, 3) \u27e65\u27e7\n```")
    writer.hparams({"rl": {"loss": "cispo", "steps": 24}, "mesh": {"shape": (8, 1, 1)},
                    "seed": 0}, {"final/heldout/success": 0.5, "final/train/success": float("nan")})
    writer.close()
    values = {(where, v.tag): (e.step, v) for where, e in read_events(tmp_path / "tb")
              for v in e.summary.value}
    step, scalar = values[(".", "eval/heldout/success")]
    assert step == 3 and abs(scalar.simple_value - 0.25) < 1e-7
    step, text = next(v for (_, tag), v in values.items() if tag.startswith("eval/heldout/episode0"))
    assert step == 3 and text.tensor.string_val[0].decode() == "```\nadd(2, 3) \u27e65\u27e7\n```"
    hp = [v for (where, tag), (_, v) in values.items() if tag == "_hparams_/session_start_info"]
    assert len(hp) == 1
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    info = HParamsPluginData.FromString(hp[0].metadata.plugin_data.content).session_start_info
    assert info.hparams["rl.loss"].string_value == "cispo"
    assert info.hparams["rl.steps"].number_value == 24
    assert info.hparams["mesh.shape"].string_value == "(8, 1, 1)"
    # The final metrics are logged as scalars of the hparams run; the non-finite one is left out.
    tags = {tag for _, tag in values}
    assert "final/heldout/success" in tags and "final/train/success" not in tags


def test_progress_off_a_terminal_prints_a_line_per_interval_with_rate_and_eta(monkeypatch):
    import io

    from rlx.train import metrics

    clock = iter([100.0, 102.0, 104.0, 140.0, 142.0, 150.0])   # one reading per update
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()     # not a terminal (no isatty)
    progress = metrics.Progress(10, "rl", ("reward",), stream=stream, interval=30.0)
    progress.update(1, {"reward": 0.5, "other": 1.0})    # the first step (compile): t0
    progress.update(2, {"reward": 0.25})                 # within the interval: silent
    progress.update(3, {"reward": 0.25})
    progress.update(4, {"reward": 0.125})                # 40 s after the first line
    progress.update(5, {"reward": 0.125})
    progress.update(10, {"reward": 1.0})                 # the last step always prints
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in stream.getvalue(), lines
    assert lines[0].startswith("rl:") and "1/10" in lines[0] and "<?" in lines[0]
    assert "reward=0.5" in lines[0] and "other" not in lines[0]
    # Step 4: 3 steps done in 40 s since the first -> 13.33 s/step, 6 steps left -> 80 s.
    assert "4/10 [00:40<01:20, 13.33s/step, reward=0.125]" in lines[1]
    assert "10/10 [00:50<00:00" in lines[2] and "reward=1" in lines[2]


def test_progress_on_a_terminal_is_a_tqdm_bar_from_the_resumed_step():
    import io

    from rlx.train import metrics

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = metrics.Progress(10, "rl", ("reward",), stream=stream)
    progress.update(7, {"reward": 0.5})     # resumed at step 6: the bar starts at 7/10
    assert progress.bar.n == 7 and progress.bar.total == 10
    progress.update(10, {"reward": 0.75})
    out = stream.getvalue()
    assert out.startswith("\rrl:") and "7/10" in out and "reward=0.5" in out
    assert "10/10" in out and "reward=0.75" in out
    assert out.endswith("\n") and progress.bar.disable   # closed at the last step
