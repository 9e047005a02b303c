"""RL algorithms as pure float32 functions: advantages, policy/value losses, KL, rollout correction.

Where verl defines the same quantity, rlx matches its semantics (verl/trainer/ppo/core_algos.py,
rollout_corr_helper.py) so results compare across frameworks; each docstring names the verl
function and any deviation. Inputs are [B,T] arrays over whole rows with a [B,T] policy mask.

Registries (names chosen from config): `ADVANTAGE_ESTIMATORS`, `POLICY_LOSSES`, `AGG_MODES`,
`KL_ESTIMATORS`.
"""

from rlx.algos.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    compute_advantages,
    gae,
    grpo_advantages,
    outcome_token_rewards,
    reinforce_pp_advantages,
    rloo_advantages,
)
from rlx.algos.correction import (
    OldLogprobs,
    RolloutCorrection,
    rollout_correction_weights,
    select_old_logprobs,
)
from rlx.algos.kl import KL_ESTIMATORS, kl_penalty
from rlx.algos.losses import (
    AGG_MODES,
    POLICY_LOSSES,
    agg_loss,
    cispo_loss,
    entropy_from_logits,
    gspo_loss,
    policy_loss,
    ppo_loss,
    value_loss,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS", "AGG_MODES", "KL_ESTIMATORS", "POLICY_LOSSES", "AdvantageInputs",
    "OldLogprobs", "RolloutCorrection", "agg_loss", "cispo_loss",
    "compute_advantages", "entropy_from_logits", "gae", "grpo_advantages", "gspo_loss",
    "kl_penalty", "outcome_token_rewards", "policy_loss", "ppo_loss", "reinforce_pp_advantages",
    "rloo_advantages", "rollout_correction_weights", "select_old_logprobs", "value_loss",
]
