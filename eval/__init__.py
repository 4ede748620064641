"""Evaluation: datasets, metrics (pure functions), runners and reports."""
