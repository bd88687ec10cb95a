"""Training: the shared loop, checkpoints on disk, and whole runs."""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .trainer import NonFiniteLoss, Trainer, read_metrics

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint", "NonFiniteLoss", "Trainer",
           "read_metrics"]
