"""The scaffold an agent reads: procedural perturbation axes, their token tables, rendering and
call parsing.

  axes.py     the axes, their atom pools and templates, and the train/held-out rule per axis
  grammar.py  the template grammar: choices enumerated and split, text and token rendering
  tables.py   `Scaffold` (one episode's draw) and `ScaffoldTables` (tokenized once, sampled in jit)
  render.py   prompt, observation, call and answer layouts, rendered as tokens, text or a bound
  parse.py    reading a round (answer or call) at the token level
"""

from rlx.envs.scaffold import axes, grammar, parse, render, tables
from rlx.envs.scaffold.axes import (
    ADD,
    ANSWER_CLOSE,
    ANSWER_OPEN,
    ARITY,
    AXES,
    AXIS_GROUPS,
    AXIS_INDEX,
    AXIS_PRESETS,
    ERROR_KINDS,
    LOOKUP,
    MUL,
    REVEAL,
    SPLITS,
    SUB,
    TOOL_KINDS,
)
from rlx.envs.scaffold.grammar import Grammar, Slot
from rlx.envs.scaffold.tables import Scaffold, ScaffoldTables, axes_mask

__all__ = ["ADD", "ANSWER_CLOSE", "ANSWER_OPEN", "ARITY", "AXES", "AXIS_GROUPS", "AXIS_INDEX",
           "AXIS_PRESETS", "ERROR_KINDS", "Grammar", "LOOKUP", "MUL", "REVEAL", "SPLITS", "SUB",
           "Scaffold", "ScaffoldTables", "Slot", "TOOL_KINDS", "axes", "axes_mask", "grammar",
           "parse", "render", "tables"]
