"""Datasets, deterministic splits, label noise and class imbalance."""
