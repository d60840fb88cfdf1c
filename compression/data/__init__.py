"""Data as jobs see it: uploaded datasets, tensors by role, outputs and evaluation."""
