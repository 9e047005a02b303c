"""How fast a model preset learns to copy from its context: SFT on the copy corpus alone
(rows packed with random sequences, each repeated once; rlx/train/demos.py) and the NLL of the
repeats every 25 steps. Chance is log(#ids) ≈ 6.6 nats; the copy (induction) skill shows as a
fall far below it.

    python -m experiments.copy_probe --lr=3e-3 --batch=64 --len=64 --steps=400
    python -m experiments.copy_probe --lr=2e-3 --batch=16 --len=128 --span=8,63   # too few pieces

docs/RESULTS.md ("Warm start") quotes both lines: many short pieces per step is what makes the
skill appear within a few hundred steps.
"""

import time

import jax
import numpy as np
from absl import app, flags

import rlx
from rlx.models import ModelConfig, Policy
from rlx.train.demos import copy_rows
from rlx.train.optim import make_optimizer, optim_section
from rlx.train.update import TrainState, make_sft_step

_PRESET = flags.DEFINE_string("preset", "tiny", "model preset")
_LR = flags.DEFINE_float("lr", 3e-3, "constant learning rate (after 20 warmup steps)")
_BATCH = flags.DEFINE_integer("batch", 64, "rows per step")
_LEN = flags.DEFINE_integer("len", 64, "row length")
_SPAN = flags.DEFINE_string("span", "4,32", "min,max length of a copied sequence")
_STEPS = flags.DEFINE_integer("steps", 400, "SFT steps")


def main(argv):
    del argv
    tok = rlx.tokenizer.load_default()
    ids = np.array([i for i in range(tok.vocab_size) if i not in (tok.pad_id, tok.eos_id)
                    and (t := tok.decode([i])) and t.isprintable()], np.int32)
    policy = Policy(ModelConfig.from_config(rlx.models.preset(_PRESET.value)))
    opt = make_optimizer(optim_section(lr=_LR.value, b2=0.98, warmup_steps=20))
    state = TrainState.create(policy.init(jax.random.key(0)), opt)
    step = jax.jit(make_sft_step(policy, opt), donate_argnums=0)
    lo, hi = (int(x) for x in _SPAN.value.split(","))
    data = jax.jit(lambda k: copy_rows(k, _BATCH.value, _LEN.value, ids, tok.pad_id,
                                       tok.eos_id, span=(lo, hi)))
    print(f"copy probe: {_PRESET.value}, lr {_LR.value}, {_BATCH.value} rows x {_LEN.value}, "
          f"pieces of {lo}-{hi} ids from {len(ids)} (chance {np.log(len(ids)):.2f} nats)")
    t0, nll = time.perf_counter(), []
    for i in range(_STEPS.value):
        key = jax.random.key(i)
        tokens, mask = data(key)
        state, metrics = step(state, tokens, mask, key)
        nll.append(float(metrics["nll"]))
        if (i + 1) % 25 == 0:
            print(f"step {i + 1:5d}  nll of the repeats {np.mean(nll[-25:]):.3f}  "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    app.run(main)
