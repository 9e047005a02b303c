"""Experiment configs: each module exposes get_config(arg=None) -> a locked ConfigDict."""
