"""Expert feedback in the loop: an episode store, a rating page, a preference reward model and a
simulated expert (`experiments/rate.py`, `experiments/expert_feedback.py`)."""
