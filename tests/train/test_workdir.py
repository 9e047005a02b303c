"""Workdirs (issue 13): one default per config, repository paths stored relative, and a resume
with another config refused with the differing keys (end to end in tests/train/test_loop.py)."""

import json
import os

import pytest

from configs import toolcalc_cispo, toolcalc_grpo
from rlx.train import setup as setup_lib
from rlx.train import workdir as workdir_lib


@pytest.mark.parametrize("spec,expected", [
    ("configs/toolcalc_grpo.py", "runs/toolcalc_grpo"),
    ("configs/toolcalc_cispo.py", "runs/toolcalc_cispo"),
    ("configs/toolcalc_grpo.py:quick", "runs/toolcalc_grpo-quick"),
    ("configs/toolcalc_grpo.py:scratch,axes=all_axes", "runs/toolcalc_grpo-scratch-axes_all_axes"),
])
def test_each_config_has_its_own_default_workdir(spec, expected):
    assert workdir_lib.default_workdir(spec) == expected


def test_repository_paths_are_stored_relative_and_resolve_back(tmp_path, monkeypatch):
    config = toolcalc_grpo.get_config()
    assert os.path.isabs(config.init.hf_path)
    record = workdir_lib.config_record(config)
    assert record["init"]["hf_path"] == os.path.join("rlx", "assets", "toolcalc_warmstart")
    assert record["env"] == json.loads(config.env.to_json())  # other values untouched
    # Read back from elsewhere (a moved workdir, another working directory): the same files.
    monkeypatch.chdir(tmp_path)
    stored = toolcalc_grpo.get_config()
    stored.unlock()
    stored.init.hf_path = record["init"]["hf_path"]
    assert setup_lib.hf_path(stored) == config.init.hf_path
    assert workdir_lib.portable({"init": {"hf_path": "/elsewhere/x"}}) == \
        {"init": {"hf_path": "/elsewhere/x"}}


def test_a_resume_with_another_config_is_refused_with_the_differing_keys(tmp_path):
    workdir = str(tmp_path)
    workdir_lib.record_config(workdir, toolcalc_grpo.get_config(), resuming=False)
    first = open(tmp_path / "config.json").read()
    # The same config resumes, and config.json is not rewritten.
    os.utime(tmp_path / "config.json", (0, 0))
    workdir_lib.record_config(workdir, toolcalc_grpo.get_config(), resuming=True)
    assert os.path.getmtime(tmp_path / "config.json") == 0
    with pytest.raises(ValueError, match=r"(?s)different config.*rl\.loss: \"ppo\" -> \"cispo\""
                                         r".*--allow_config_change"):
        workdir_lib.record_config(workdir, toolcalc_cispo.get_config(), resuming=True)
    assert open(tmp_path / "config.json").read() == first
    # Allowed explicitly: the new config is recorded and the old one kept.
    workdir_lib.record_config(workdir, toolcalc_cispo.get_config(), resuming=True,
                              allow_change=True)
    kept = [f for f in os.listdir(tmp_path) if f.startswith("config.") and f != "config.json"]
    assert len(kept) == 1 and open(tmp_path / kept[0]).read() == first
    assert json.load(open(tmp_path / "config.json"))["rl"]["loss"] == "cispo"


def test_diff_names_keys_present_on_one_side():
    assert workdir_lib.config_diff({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}) == \
        ["a.c: (absent) -> 2"]
