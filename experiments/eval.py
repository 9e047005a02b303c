"""Evaluate a checkpoint of a training workdir on the frozen train-scaffold and held-out-scaffold
sets (success, reward components, rounds, tool calls, hack rate) and print decoded episodes.

    python -m experiments.eval --workdir=runs/toolcalc_grpo            # latest checkpoint
    python -m experiments.eval --workdir=runs/toolcalc_grpo --step=300 --examples=5

Policy tokens are shown between ⟦ and ⟧; everything else is prompt or environment.
"""

import argparse

from rlx.train.evaluation import evaluate_checkpoint


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    ap.add_argument("--examples", type=int, default=3, help="episodes to print per split")
    args = ap.parse_args(argv)
    metrics, examples = evaluate_checkpoint(args.workdir, args.step, num_examples=args.examples)
    print(f"checkpoint step {metrics.pop('step')}")
    for key in sorted(metrics):
        print(f"  {key:32s} {metrics[key]:8.3f}")
    for texts in examples.values():
        for text in texts:
            print(text)
            print()


if __name__ == "__main__":
    main()
