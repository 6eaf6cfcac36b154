"""Inference engines other than PyTorch, for serving a trained model (optional extras)."""
