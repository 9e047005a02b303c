"""Workdirs that cannot be confused: one default per config, a stored config that a resume checks,
and paths stored relative to the repository.

A workdir's `config.json` is written when the run starts and never rewritten by a resume. A rerun
on a workdir that holds checkpoints compares its config with the stored one and refuses on any
difference, printing the differing keys, unless the caller allows it (`--allow_config_change`);
then the old file is kept as `config.<time>.json`. Paths inside the repository (the shipped warm
start) are stored relative to it, so a workdir can be moved or shared; `resolve_path` reads them
back.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import ml_collections

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_workdir(config_spec: str) -> str:
    """`runs/<config name>[-<arg>]` for `path/to/<config name>.py[:arg]`, e.g.
    `configs/toolcalc_cispo.py:quick` -> `runs/toolcalc_cispo-quick`."""
    path, _, arg = config_spec.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    if arg:
        name += "-" + re.sub(r"[^A-Za-z0-9._-]+", "_", arg.replace(",", "-"))
    return os.path.join("runs", name)


# Config paths stored relative to the repository when they point inside it; whoever reads one
# back resolves it with `resolve_path` (`setup.hf_path` does for `init.hf_path`).
REPO_PATH_KEYS = (("init", "hf_path"),)


def portable(record: dict) -> dict:
    """`record` (a config as a nested dict) with the `REPO_PATH_KEYS` paths that lie inside the
    repository made relative to it; everything else as it is."""
    record = json.loads(json.dumps(record))
    for section, key in REPO_PATH_KEYS:
        value = (record.get(section) or {}).get(key)
        if isinstance(value, str) and os.path.isabs(value):
            rel = os.path.relpath(value, REPO_ROOT)
            if not rel.startswith(".."):
                record[section][key] = rel
    return record


def resolve_path(path: str) -> str:
    """A path from a config: as given if it exists (absolute, or relative to the working
    directory), else relative to the repository (how `config.json` stores repository paths)."""
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    in_repo = os.path.join(REPO_ROOT, path)
    return in_repo if os.path.exists(in_repo) else path


def config_record(config: ml_collections.ConfigDict) -> dict:
    """The config as it is stored in `config.json`."""
    return portable(json.loads(config.to_json_best_effort()))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def config_diff(stored: dict, new: dict) -> list[str]:
    """'key: stored -> new' for every key whose value differs (or exists on one side only)."""
    a, b = _flatten(stored), _flatten(new)
    missing = object()
    lines = []
    for key in sorted(set(a) | set(b)):
        old, cur = a.get(key, missing), b.get(key, missing)
        if old != cur:
            show = lambda v: "(absent)" if v is missing else json.dumps(v)
            lines.append(f"{key}: {show(old)} -> {show(cur)}")
    return lines


def record_config(workdir: str, config: ml_collections.ConfigDict, *, resuming: bool,
                  allow_change: bool = False, write: bool = True) -> None:
    """Writes `config.json` for a new run; for a resumed one, checks the config against it.
    With `write=False` (the other processes of a multi-process run) it only checks.

    Raises ValueError naming the differing keys when a resumed run's config differs and
    `allow_change` is False."""
    path = os.path.join(workdir, "config.json")
    record = config_record(config)
    if resuming and os.path.exists(path):
        with open(path) as f:
            stored = portable(json.load(f))
        diff = config_diff(stored, record)
        if not diff:
            return
        if not allow_change:
            raise ValueError(
                f"{workdir} holds a run with a different config; resuming it with this one "
                f"would mix two runs. Differences (stored -> now):\n  " + "\n  ".join(diff)
                + "\nUse another --workdir, or pass --allow_config_change to continue this run "
                "under the new config.")
        if not write:
            return
        kept = os.path.join(workdir, f"config.{time.strftime('%Y%m%dT%H%M%S')}.json")
        os.replace(path, kept)
        print(f"config changed on resume (previous config kept as {kept}):\n  "
              + "\n  ".join(diff), flush=True)
    if not write:
        return
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
