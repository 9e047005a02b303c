"""Command-line overrides checked before anything runs.

`ml_collections.config_flags` applies `--config.a.b=value` while absl parses the flags, and an
unknown key there ends in a bare `AttributeError: "'b'"` traceback. `check_overrides` loads the
config the command names, walks every override's path and refuses an unknown key by name, with the
keys allowed at that level and the closest ones ("did you mean ..."). The experiment scripts call
it through `run(main)` in place of `absl.app.run(main)`, which also makes an error end the process.
Only `--config.a.b=value` and `--config.a.b value` are checked (not `--flagfile` contents).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Sequence

import ml_collections
from absl import app


def load_config(spec: str) -> ml_collections.ConfigDict:
    """The config of `path/to/config.py[:arg]`, as `config_flags.DEFINE_config_file` loads it."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_rlx_config_check", path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"--config={spec!r}: {path!r} is not a Python config file")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def unknown_override(config: ml_collections.ConfigDict, path: str) -> str | None:
    """None if `path` ('a.b.c') names a field of `config`; else what is wrong with it."""
    node, walked = config, []
    for key in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict):
            return None  # inside a plain value (a tuple, a dict field): config_flags decides
        if key not in node:
            where = ".".join(walked) or "the config"
            known = sorted(node.keys())
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join('.'.join(walked + [c]) for c in close)}?" \
                if close else ""
            return (f"unknown key {'.'.join(walked + [key])!r}{hint} "
                    f"(keys of {where}: {', '.join(known)})")
        node, walked = node[key], walked + [key]
    return None


def check_overrides(argv: Sequence[str], default_config: str | None,
                    flag: str = "config") -> None:
    """Raises SystemExit naming every unknown `--<flag>.<path>` override in `argv`."""
    spec, paths = default_config, []
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg.startswith(f"--{flag}="):
            spec = arg.split("=", 1)[1]
        elif arg.startswith(f"--{flag}."):
            name = arg[len(flag) + 3:].split("=", 1)[0]
            if name:
                paths.append(name)
        elif arg == f"--{flag}" and i + 1 < len(args):
            spec = args[i + 1]
    if not paths or not spec:
        return
    config = load_config(spec)
    problems = [p for p in (unknown_override(config, path) for path in paths) if p]
    if problems:
        raise SystemExit("\n".join(f"--{flag} override: {p}" for p in problems))


def run(main: Callable, default_config: str | None) -> None:
    """`absl.app.run(main)` after `check_overrides(sys.argv, default_config)`.

    An exception from `main` is printed and ends the process with status 1 at once: a library
    thread left waiting (orbax after a failed write) must not keep the interpreter alive."""
    check_overrides(sys.argv, default_config)

    def guarded(argv):
        try:
            return main(argv)
        except app.UsageError:
            raise  # absl prints the usage line
        except Exception:  # noqa: BLE001 -- report and exit; never hang at interpreter shutdown
            traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)

    app.run(guarded)
