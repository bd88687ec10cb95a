"""Training: the shared loop, checkpoints on disk, and whole runs."""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .trainer import NonFiniteLoss, Trainer, read_metrics

__all__ = [
    "CheckpointError",
    "NonFiniteLoss",
    "Trainer",
    "load_checkpoint",
    "read_metrics",
    "save_checkpoint",
]
