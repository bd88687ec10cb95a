"""Training: the shared loop and whole runs (the run folder itself is :mod:`disentangle.runs`)."""
from .trainer import Diverged, NonFiniteLoss, NonFiniteModel, Trainer, read_metrics

__all__ = [
    "Diverged",
    "NonFiniteLoss",
    "NonFiniteModel",
    "Trainer",
    "read_metrics",
]
