"""Measuring imputations (layer 5): missing-data patterns, metrics, baselines, the Torch
fusion model, the quality harness and the demo."""
