"""Optimizers and schedules from the `optim` config section (optax).

Every AdamW field is configurable: MiniMax-M1 needed b2=0.95 and eps=1e-15 for stable RL.
"""

from __future__ import annotations

import ml_collections
import optax

SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adamw", "sgd")


def optim_section(**overrides) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0,
        schedule="constant", warmup_steps=0, decay_steps=0, final_lr_frac=0.1))
    for key, value in overrides.items():
        if key not in cfg:
            raise KeyError(f"optim.{key} is not an optimizer field; fields: {sorted(cfg.keys())}")
        cfg[key] = value
    return cfg


def make_schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule={cfg.schedule!r} is unknown; allowed: {SCHEDULES}")
    warm = int(cfg.warmup_steps)
    if cfg.schedule == "constant":
        main = optax.constant_schedule(cfg.lr)
    else:
        if cfg.decay_steps <= 0:
            raise ValueError(f"optim.decay_steps={cfg.decay_steps} must be > 0 for "
                             f"schedule={cfg.schedule!r}")
        end = cfg.lr * cfg.final_lr_frac
        main = (optax.cosine_decay_schedule(cfg.lr, cfg.decay_steps, alpha=cfg.final_lr_frac)
                if cfg.schedule == "cosine"
                else optax.linear_schedule(cfg.lr, end, cfg.decay_steps))
    if warm <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warm), main], [warm])


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Gradient clipping (global norm; 0 disables) followed by the optimizer."""
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name={cfg.name!r} is unknown; allowed: {OPTIMIZERS}")
    sched = make_schedule(cfg)
    if cfg.name == "adamw":
        opt = optax.adamw(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    else:
        opt = optax.sgd(sched)
    if cfg.grad_clip and cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
    return opt
