"""Shared test inputs and independent numpy references (float64, plain loops) for rlx.algos."""

import numpy as np


def agentic_mask(rng: np.random.Generator, b: int, t: int) -> np.ndarray:
    """[B,T] float mask shaped like multi-round rollouts: a prompt, then alternating policy
    segments and tool-observation gaps, then padding. Row 0 is empty (no policy token), row 1 is a
    single contiguous response, row 2 has a single policy token; the rest are random."""
    mask = np.zeros((b, t))
    for i in range(1, b):
        pos = int(rng.integers(1, 5))  # prompt
        if i == 2:
            mask[i, pos] = 1
            continue
        end = int(rng.integers(t // 2, t + 1))
        policy = True
        while pos < end:
            seg = int(rng.integers(1, 6))
            if policy or i == 1:
                mask[i, pos:min(pos + seg, end)] = 1
            pos += seg
            policy = not policy
    return mask


def np_masked_whiten(x, mask):
    sel = x[mask > 0]
    mean = sel.mean()
    var = sel.var(ddof=1) if sel.size > 1 else 0.0
    return (x - mean) / np.sqrt(var + 1e-8) * mask


def compress_rewards(r_row, m_row):
    """Policy positions of a row and their rewards, with each non-policy reward credited to the
    closest policy token before it (rewards before the first policy token are dropped)."""
    pos = np.flatnonzero(m_row > 0)
    rew = r_row[pos].astype(np.float64).copy()
    for k, p in enumerate(pos):
        nxt = pos[k + 1] if k + 1 < len(pos) else len(r_row)
        rew[k] += r_row[p + 1:nxt].sum()
    return pos, rew


def np_gae(r, v, m, gamma, lam):
    """Textbook GAE on each row's compressed policy sequence: A_k = sum_l (gamma lam)^l delta."""
    adv = np.zeros_like(r, dtype=np.float64)
    for i in range(r.shape[0]):
        pos, rew = compress_rewards(r[i], m[i])
        vals = v[i, pos].astype(np.float64)
        n = len(pos)
        nxt = np.append(vals[1:], 0.0)
        delta = rew + gamma * nxt - vals
        for k in range(n):
            adv[i, pos[k]] = sum((gamma * lam) ** j * delta[k + j] for j in range(n - k))
    return adv, (adv + v) * m


def np_gae_verl_loop(r, v, m, gamma, lam):
    """verl's masked GAE loop, transcribed literally (before whitening)."""
    b, t = r.shape
    nextvalues, lastgaelam = np.zeros(b), np.zeros(b)
    out = np.zeros((b, t))
    for s in reversed(range(t)):
        delta = r[:, s] + gamma * nextvalues - v[:, s]
        lastgaelam_ = delta + gamma * lam * lastgaelam
        nextvalues = v[:, s] * m[:, s] + (1 - m[:, s]) * nextvalues
        lastgaelam = lastgaelam_ * m[:, s] + (1 - m[:, s]) * lastgaelam
        out[:, s] = lastgaelam
    return out


def np_returns(r, m, gamma):
    """Discounted return-to-go over each row's compressed policy sequence."""
    ret = np.zeros_like(r, dtype=np.float64)
    for i in range(r.shape[0]):
        pos, rew = compress_rewards(r[i], m[i])
        for k in range(len(pos)):
            ret[i, pos[k]] = sum(gamma ** j * rew[k + j] for j in range(len(pos) - k))
    return ret


def np_agg(loss, mask, mode, horizon=None):
    """verl's `agg_loss` (verl/trainer/ppo/core_algos.py), written from its formulas:
    token-mean = sum(l*m)/sum(m); seq-mean-token-sum = mean_i sum_t l*m; seq-mean-token-mean =
    mean_i (sum_t l*m / sum_t m); seq-mean-token-sum-norm = sum_i sum_t l*m / horizon (a sum
    over rows, no mean; horizon = the mask's length unless given). Rows without tokens are left
    out of the seq-means."""
    if mode == "seq-mean-token-sum-norm":
        return (loss * mask).sum() / (mask.shape[1] if horizon is None else horizon)
    if mode == "token-mean":
        n = mask.sum()
        return (loss * mask).sum() / n if n else 0.0
    rows = [i for i in range(mask.shape[0]) if mask[i].sum() > 0]
    if not rows:
        return 0.0
    if mode == "seq-mean-token-mean":
        return np.mean([(loss[i] * mask[i]).sum() / mask[i].sum() for i in rows])
    seq = np.mean([(loss[i] * mask[i]).sum() for i in rows])
    if mode == "seq-mean-token-sum":
        return seq
    raise ValueError(mode)
