"""Finding E1 end to end: the `quick` experiment's figures (the control sampler shows no gap, the
bf16 ones do, and the scatter points give the probe's metrics again in numpy), a bad config value
refused by name, and the Colab notebook executed on the quick settings.

The experiment and the notebook kernel run in their own processes (the experiment's absl flags
would clash with other entry points imported here) and share one compilation cache, so the
notebook reuses what the experiment compiled.
"""

import json
import os
import subprocess
import sys

import nbclient
import nbformat
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(REPO, "experiments", "colab", "precision_gap.ipynb")
CONTROL = "fp32 body / fp32 head"
BF16_VARIANTS = ("bf16 body / bf16 head", "bf16 body / fp32 head")


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    env = dict(os.environ)
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def run_experiment(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.precision_gap", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, cache_env):
    out = tmp_path_factory.mktemp("precision_gap")
    proc = run_experiment(["--config=configs/precision_gap.py:quick", f"--out={out}"], cache_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "precision_gap.json") as f:
        return out, json.load(f), proc.stdout


def test_quick_run_figures(quick_run):
    out, results, stdout = quick_run
    head = results["checkpoint"]["sweep"][0]["variants"]
    points = [*results["checkpoint"]["sweep"], *results["vocab_sweep"]["points"]]
    for point in points:
        for name, figures in point["variants"].items():
            assert all(0 < p <= 1 + 1e-6 for p in figures["pearson"]), (name, figures)
        control = point["variants"][CONTROL]
        # The control runs the trainer's own computation: identical probabilities, no error.
        np.testing.assert_allclose(control["pearson"], 1.0, atol=1e-6)
        assert control["max_abs_dp"] == [0.0] and control["k3_kl"] == [0.0]
        for name in BF16_VARIANTS:
            figures = point["variants"][name]
            assert figures["max_abs_dp"][0] > 0 and figures["k3_kl"][0] > 0, name
            assert figures["pearson"][0] < 1, name
    assert np.count_nonzero(head[CONTROL]["layer_rel_err"]) == 0
    for name in BF16_VARIANTS:
        # A bf16 body is off from the embedding onwards: error in every layer's stream.
        assert all(e > 1e-4 for e in head[name]["layer_rel_err"][0]), name
    assert head[CONTROL]["n_tokens"][0] > 100
    with open(out / "precision_gap.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "| sampler | Pearson |" in stdout


def test_scatter_points_give_the_probe_figures_again(quick_run):
    """The saved (trainer, sampler) probabilities of the sampled tokens, summarized in float64
    numpy, equal the probe's float32 metrics: the points are the ones the probe measured."""
    _, results, _ = quick_run
    scatter = results["checkpoint"]["scatter"]
    head = results["checkpoint"]["sweep"][0]["variants"]
    for name, points in scatter["variants"].items():
        p_trainer, p_sampler = np.array(points["trainer_prob"]), np.array(points["sampler_prob"])
        figures = head[name]
        assert len(p_trainer) == figures["n_tokens"][scatter["seed"]]
        np.testing.assert_allclose(np.corrcoef(p_trainer, p_sampler)[0, 1],
                                   figures["pearson"][scatter["seed"]], atol=1e-6)
        np.testing.assert_allclose(np.abs(p_trainer - p_sampler).max(),
                                   figures["max_abs_dp"][scatter["seed"]], rtol=1e-6)
        np.testing.assert_allclose(np.abs(p_trainer - p_sampler).mean(),
                                   figures["mean_abs_dp"][scatter["seed"]], rtol=1e-5)


def test_bad_config_value_is_refused_by_name(cache_env, tmp_path):
    proc = run_experiment(["--config=configs/precision_gap.py:quick", f"--out={tmp_path}",
                           "--config.scatter_variants=('fp16 body / fp16 head',)"], cache_env)
    assert proc.returncode == 1
    assert "scatter_variants names 'fp16 body / fp16 head'; allowed: the keys of variants" \
        in proc.stderr


def test_notebook_runs_and_shows_the_figure(cache_env, tmp_path, monkeypatch):
    for key in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        monkeypatch.setenv(key, cache_env[key])     # the kernel inherits this environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in notebook.cells if cell.cell_type == "code"), "stored outputs"
    [parameters] = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    parameters.source = f'CONFIG_ARG = "quick"\nOUT_DIR = {str(tmp_path)!r}\n'
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert (tmp_path / "precision_gap.json").exists()
