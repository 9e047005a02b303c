"""A reward model from pairwise preferences (Bradley–Terry), on the policy's decoder.

The model is the `Critic` (the policy's transformer with a scalar head) read at an episode's last
token: `score(x)`. Bradley–Terry says P(a preferred to b) = sigmoid(score(a) - score(b)), so it is
fit by minimizing -log sigmoid(score(chosen) - score(rejected)) over the stored judgements (ties
carry no order and are left out). The trunk starts from the policy's weights, the head from zero.

    rm = RewardModel.from_policy(policy_cfg)
    params = rm.init(jax.random.key(0), policy_params)
    params, history = fit(rm, params, pairs, steps=300)      # pairs: `PreferencePairs`
    save(path, rm, params); rm, params = load(path)
    rm.scores(params, tokens, length)                        # [B] float32
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlx.models import Critic, ModelConfig
from rlx.models.transformer import Transformer

Array = jax.Array
Params = Any


class PreferencePairs(NamedTuple):
    """Right-padded token rows of the chosen and the rejected episode of every pair."""

    chosen: np.ndarray            # [N, T] int32
    chosen_length: np.ndarray     # [N] int32
    rejected: np.ndarray
    rejected_length: np.ndarray

    def __len__(self) -> int:
        return len(self.chosen_length)

    def take(self, idx) -> PreferencePairs:
        return PreferencePairs(*(x[idx] for x in self))


def pad_rows(rows: list[np.ndarray], pad_id: int = 0, multiple: int = 64
             ) -> tuple[np.ndarray, np.ndarray]:
    """([N, T] right-padded ids, [N] lengths), T the longest row rounded up to `multiple`."""
    lengths = np.array([len(r) for r in rows], np.int32)
    width = max(multiple, -(-int(lengths.max(initial=1)) // multiple) * multiple)
    out = np.full((len(rows), width), pad_id, np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, lengths


def pairs_from_store(store, pad_id: int = 0) -> PreferencePairs:
    """Every non-tie judgement of an `EpisodeStore` as token pairs. A flagged episode (unsafe or
    reward hacking, by any rater) loses every comparison with an unflagged one, whatever the
    choice: the flag turns into a penalty the reward model learns."""
    flagged = set(store.flagged())
    chosen, rejected = [], []
    for j in store.judgements():
        a, b = j.first in flagged, j.second in flagged
        if a != b:
            win, lose = (j.second, j.first) if a else (j.first, j.second)
        elif j.choice == "tie":
            continue
        else:
            win, lose = (j.first, j.second) if j.choice == "first" else (j.second, j.first)
        chosen.append(store.episode(win).tokens)
        rejected.append(store.episode(lose).tokens)
    if not chosen:
        raise ValueError(f"the store at {store.path} holds no judgement with a preference "
                         f"(only ties, or none): rate some pairs first")
    c, cl = pad_rows(chosen, pad_id)
    r, rl = pad_rows(rejected, pad_id)
    width = max(c.shape[1], r.shape[1])
    pad = lambda x: np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=pad_id)
    return PreferencePairs(pad(c), cl, pad(r), rl)


@dataclasses.dataclass(frozen=True)
class RewardModel:
    critic: Critic

    @classmethod
    def from_policy(cls, cfg: ModelConfig, **kwargs) -> RewardModel:
        return cls(Critic(cfg, **kwargs))

    def init(self, key: Array, policy_params: Params | None = None) -> Params:
        """Fresh parameters: the trunk copied from `policy_params` when given, the head at zero
        (every episode scores 0 before training)."""
        params = self.critic.init(key)
        if policy_params is not None:
            params = {k: policy_params.get(k, v) for k, v in params.items()}
        return params | {"value_head": jax.tree.map(jnp.zeros_like, params["value_head"])}

    def scores(self, params: Params, tokens: Array, length: Array) -> Array:
        """[B] float32: the head read at each row's last token (`length` - 1)."""
        hidden = self.critic.forward(params, tokens).hidden
        last = jnp.take_along_axis(hidden, (length - 1)[:, None, None], axis=1)
        value = self.critic.module.apply({"params": params}, last, method=Transformer.value)
        return value[:, 0].astype(jnp.float32)

    def loss(self, params: Params, batch: PreferencePairs) -> tuple[Array, dict[str, Array]]:
        """Bradley–Terry negative log-likelihood of the batch, and its pair accuracy."""
        margin = (self.scores(params, batch.chosen, batch.chosen_length)
                  - self.scores(params, batch.rejected, batch.rejected_length))
        nll = -jnp.mean(jax.nn.log_sigmoid(margin))
        return nll, {"nll": nll, "accuracy": jnp.mean((margin > 0).astype(jnp.float32)),
                     "margin": jnp.mean(margin)}


def fit(rm: RewardModel, params: Params, pairs: PreferencePairs, *, steps: int = 300,
        batch_size: int = 32, lr: float = 3e-4, weight_decay: float = 0.0, heldout: float = 0.2,
        seed: int = 0, eval_every: int = 50) -> tuple[Params, list[dict[str, float]]]:
    """Fits `params` on a random (1 - `heldout`) share of `pairs` with AdamW under jit; every
    `eval_every` steps and at the end records the train batch's NLL and the held-out pairs'
    NLL and accuracy (`history`)."""
    if not 0 <= heldout < 1:
        raise ValueError(f"heldout={heldout}: the share of pairs held out, in [0, 1)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    n_test = int(round(heldout * len(pairs)))
    test, train = pairs.take(order[:n_test]), pairs.take(order[n_test:])
    if len(train) == 0:
        raise ValueError(f"{len(pairs)} pairs leave none to train on with heldout={heldout}")
    opt = optax.adamw(lr, weight_decay=weight_decay)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        (_, metrics), grads = jax.value_and_grad(rm.loss, has_aux=True)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    evaluate = jax.jit(lambda p, b: rm.loss(p, b)[1])
    history = []
    for i in range(1, steps + 1):
        idx = rng.integers(len(train), size=min(batch_size, len(train)))
        params, opt_state, metrics = step(params, opt_state, train.take(idx))
        if i % eval_every == 0 or i == steps:
            row = {"step": i, "train_nll": float(metrics["nll"])}
            if len(test):
                m = evaluate(params, test)
                row |= {"heldout_nll": float(m["nll"]), "heldout_accuracy": float(m["accuracy"])}
            history.append(row)
    return params, history


def save(path: str, rm: RewardModel, params: Params) -> None:
    """The model config (JSON) and the parameters (flax msgpack) in directory `path`."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(rm.critic.cfg), f, indent=1)
    with open(os.path.join(path, "params.msgpack"), "wb") as f:
        f.write(flax.serialization.to_bytes(jax.device_get(params)))


def load(path: str) -> tuple[RewardModel, Params]:
    for name in ("config.json", "params.msgpack"):
        if not os.path.exists(os.path.join(path, name)):
            raise FileNotFoundError(f"{path} is not a saved reward model: {name} is missing "
                                    f"(`rlx.feedback.reward_model.save` writes it)")
    with open(os.path.join(path, "config.json")) as f:
        cfg = ModelConfig(**json.load(f))
    rm = RewardModel.from_policy(cfg)
    template = rm.critic.init(jax.random.key(0))
    with open(os.path.join(path, "params.msgpack"), "rb") as f:
        params = flax.serialization.from_bytes(template, f.read())
    return rm, params
