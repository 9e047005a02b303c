"""The training card a shipped checkpoint carries (`metrics.json`), from a run's metrics log."""

import json
import os

import numpy as np

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
