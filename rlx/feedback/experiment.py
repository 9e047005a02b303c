"""The expert-feedback experiment: preferences from a (simulated) expert -> a reward model -> RL.

Stages, each resumable (a rerun skips what is done):
  collect  episodes of the warm start at temperature 1 (`collect.tasks` tasks x `collect.samples`
           samples, the forbidden tool listed), into `<workdir>/feedback.sqlite`;
  label    the simulated expert judges up to `expert.pairs` informative pairs through the store
           (`rlx.feedback.expert`: a hidden criterion, `expert.noise` of its answers flipped);
  fit      a Bradley–Terry reward model on the warm start's trunk (`<workdir>/reward_model`), with
           held-out pair accuracy in `reward_model.json`;
  rl       RL from the warm start for each arm x seed in `<workdir>/<arm>/seed<k>`:
             preference  the learned reward only;
             rule        the rule reward `correct` only (what rlx had before);
           both log the learned reward, the rule reward and the expert's hidden criterion
           (`expert_gold`, weight 0: measured, never optimized) on every RL batch and on the frozen
           evaluation sets every `base.eval.every` steps.
At the end: `results.md` (gold, learned reward and success before and after, per arm and seed)
and `expert_feedback.png` (gold and learned reward over RL steps, per arm, seeds as lines).
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from rlx.feedback import expert as expert_lib
from rlx.feedback import reward_model as rm_lib
from rlx.feedback.store import EpisodeStore, records_from_trajectory
from rlx.rollout import run_episodes
from rlx.train import evaluation, loop
from rlx.train.metrics import read_jsonl

ARMS = ("preference", "rule")
STAGES = ("collect", "label", "fit", "rl")
STORE = "feedback.sqlite"


def collect(config: ml_collections.ConfigDict, store: EpisodeStore) -> int:
    """Samples the warm start's episodes into `store`; returns how many."""
    s, params = evaluation.initial_params(config.base)
    c = config.collect
    kw = dict(s.sampling, batch_size=c.tasks * c.samples, group_size=c.samples,
              temperature=c.temperature)
    traj = run_episodes(s.policy, params, s.env, s.env_params, jax.random.key(c.seed), **kw)
    total, comps = s.reward_fn(traj, traj.task)
    return len(store.add_episodes(records_from_trajectory(
        jax.device_get(traj), s.tokenizer, run="warmstart", step=0, total=total,
        components=comps, scaffold=evaluation.scaffold_labels(s, traj))))


def fit_reward_model(config: ml_collections.ConfigDict, store: EpisodeStore, out: str) -> dict:
    """Fits and saves the reward model; returns its history and pair counts."""
    s, params = evaluation.initial_params(config.base)
    pairs = rm_lib.pairs_from_store(store, pad_id=s.tokenizer.pad_id)
    rm = rm_lib.RewardModel.from_policy(s.policy.cfg)
    c = config.reward_model
    fitted, history = rm_lib.fit(rm, rm.init(jax.random.key(c.seed), jax.device_get(params)),
                                 pairs, steps=c.steps, batch_size=c.batch_size, lr=c.lr,
                                 heldout=c.heldout, seed=c.seed, eval_every=c.eval_every)
    rm_lib.save(out, rm, fitted)
    return {"pairs": len(pairs), "history": history}


def arm_config(config: ml_collections.ConfigDict, arm: str, seed: int, rm_path: str):
    """The RL run of one arm and seed: the base config with the arm's reward; every arm logs
    the learned reward, the rule reward and the expert's criterion."""
    if arm not in ARMS:
        raise ValueError(f"arm {arm!r} is unknown; known: {list(ARMS)}")
    cfg = ml_collections.ConfigDict(config.base.to_dict())
    cfg.seed = seed
    learned = 1.0 if arm == "preference" else 0.0
    cfg.rewards = ml_collections.ConfigDict({
        "preference": {"weight": learned, "path": rm_path},
        "correct": 1.0 - learned, "expert_gold": 0.0})
    cfg.mesh.shape = tuple(cfg.mesh.shape)
    cfg.lock()
    return cfg


def run(config: ml_collections.ConfigDict, workdir: str, stop_after: str = "rl") -> dict:
    """Runs (or resumes) the stages up to `stop_after` ('collect' leaves a store for people
    to rate with `python -m experiments.rate`; their judgements join the expert's in `fit`)."""
    if stop_after not in STAGES:
        raise ValueError(f"stop_after={stop_after!r}; allowed: {', '.join(STAGES)}")
    os.makedirs(workdir, exist_ok=True)
    store = EpisodeStore(os.path.join(workdir, STORE))
    if store.count()["episodes"] == 0:
        print(f"== collect: {collect(config, store)} episodes", flush=True)
    if stop_after == "collect":
        return {"store": store.count()}
    rater = expert_lib.SimulatedExpert(noise=config.expert.noise, seed=config.expert.seed)
    left = config.expert.pairs - len(store.judgements(rater=rater.rater))
    if left > 0:
        print(f"== label: {rater.rate(store, left)} pairs judged", flush=True)
    if stop_after == "label":
        return {"store": store.count()}
    rm_path = os.path.join(workdir, "reward_model")
    rm_json = os.path.join(workdir, "reward_model.json")
    if not os.path.exists(rm_json):
        fit = fit_reward_model(config, store, rm_path)
        with open(rm_json, "w") as f:
            json.dump(fit, f, indent=1)
    with open(rm_json) as f:
        fit = json.load(f)
    print(f"== reward model: {fit['pairs']} pairs, last {fit['history'][-1]}", flush=True)
    if stop_after == "fit":
        return {"store": store.count(), "reward_model": fit}
    arms = [a.strip() for a in config.arms.split("+") if a.strip()]
    results = {}
    for seed in range(config.seeds):
        for arm in arms:
            cfg = arm_config(config, arm, seed, os.path.abspath(rm_path))
            run_dir = os.path.join(workdir, arm, f"seed{seed}")
            print(f"== rl: {arm} seed {seed}", flush=True)
            summary = loop.train_and_evaluate(cfg, run_dir)
            results.setdefault(arm, {})[seed] = {
                "warm": summary["warm_start"], "final": summary["final"],
                "curves": read_jsonl(os.path.join(run_dir, "metrics.jsonl"))}
    table = write_table(results, fit, store, os.path.join(workdir, "results.md"))
    plot(results, fit, os.path.join(workdir, "expert_feedback.png"))
    print(table, flush=True)
    return {"results": results, "reward_model": fit, "table": table}


KEYS = (("train/reward/expert_gold", "gold"), ("train/reward/preference", "learned reward"),
        ("train/success", "success"), ("train/hack_rate", "forbidden-tool rate"),
        ("train/tool_calls", "tool calls"), ("train/invalid_calls", "invalid calls"))


def write_table(results: dict, fit: dict, store: EpisodeStore, path: str) -> str:
    counts = store.count()
    last = fit["history"][-1]
    lines = [f"Reward model: {fit['pairs']} preference pairs from {counts['judgements']} "
             f"judgements of {counts['episodes']} episodes ({counts['flags']} flags); held-out "
             f"pair accuracy {last.get('heldout_accuracy', float('nan')):.3f}, NLL "
             f"{last.get('heldout_nll', float('nan')):.3f} (ln 2 = 0.693 is chance).", "",
             "Greedy, on the frozen train-scaffold evaluation set, before -> after RL "
             "(mean over seeds; per seed in brackets):", "",
             "| arm | " + " | ".join(name for _, name in KEYS) + " |",
             "|---|" + "---|" * len(KEYS)]
    for arm, by_seed in results.items():
        cells = []
        for key, _ in KEYS:
            before = np.mean([r["warm"].get(key, np.nan) for r in by_seed.values()])
            after = np.array([r["final"].get(key, np.nan) for r in by_seed.values()])
            seeds = ", ".join(f"{v:.3f}" for v in after)
            cells.append(f"{before:.3f} -> {after.mean():.3f} ({seeds})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    with open(path, "w") as f:
        f.write(text + "\n")
    return text


def curve(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `key` in a run's evaluations (stage 'eval', step 0 = the warm start)."""
    rows = [(r["step"], r[key]) for r in records if r["stage"] == "eval" and key in r]
    rows = sorted(dict(rows).items())
    return np.array([x for x, _ in rows]), np.array([y for _, y in rows], np.float64)


def plot(results: dict, fit: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("train/reward/expert_gold", "expert's hidden criterion (gold)"),
              ("train/reward/preference", "learned reward (reward-model score)"),
              ("train/success", "success (rule reward `correct`)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        for i, (arm, by_seed) in enumerate(results.items()):
            for seed, r in by_seed.items():
                x, y = curve(r["curves"], key)
                ax.plot(x, y, color=f"C{i}", alpha=0.8, marker="o", ms=3,
                        label=f"RL on {arm}" if seed == 0 else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean over the frozen train-scaffold set (greedy)")
    axes[0][0].legend(fontsize=8)
    n = max(len(r) for r in results.values())
    acc = fit["history"][-1].get("heldout_accuracy", float("nan"))
    fig.suptitle(f"Expert feedback: RL on a reward model of {fit['pairs']} preferences "
                 f"(held-out pair accuracy {acc:.2f}) vs on the rule reward; {n} seed(s), "
                 f"one line each")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
