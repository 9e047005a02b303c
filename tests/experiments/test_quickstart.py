"""The quick-start notebook, executed as a fresh Colab user would run it (in its own kernel), on
settings small enough for CI: it trains, shows the learning curves, and evaluates with decoded
episodes; the notebook is stored without outputs."""

import json
import os

import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(REPO, "experiments", "colab", "quickstart.ipynb")

# The quick config with 1 RL step of 8 episodes and 8 evaluation episodes per set.
CI_OVERRIDES = {"rl.steps": 1, "rollout.batch_size": 8, "rollout.group_size": 4,
                "rollout.max_rounds": 3, "eval.every": 0, "eval.num_episodes": 8,
                "eval.pass_k": 0, "checkpoint.every": 1}


def test_quickstart_notebook_trains_plots_and_evaluates(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in notebook.cells if cell.cell_type == "code"), "stored outputs"
    [parameters] = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    workdir = tmp_path / "run"
    parameters.source = (f'CONFIG_ARG = "quick"\nOVERRIDES = {CI_OVERRIDES!r}\n'
                         f'WORKDIR = {str(workdir)!r}\n')
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "heldout/success" in text and "--- heldout episode 1" in text and "\u27e6" in text
    config = json.load(open(workdir / "config.json"))
    assert config["rl"]["steps"] == 1 and config["eval"]["num_episodes"] == 8
    assert json.load(open(workdir / "summary.json"))["final"]["heldout/success"] >= 0.0
