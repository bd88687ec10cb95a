"""A finished (or stopped) run loaded back: its config, split and best model."""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import torch

from ..config import RunConfig
from ..data import Split
from ..models import MODELS
from ..models.base import FactorRecommender
from .checkpoint import CheckpointError
from .folder import BEST, RunFolder


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/``None`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or
    ``mps`` as a torch device; ``ValueError`` naming the option for anything else or for a
    device this machine lacks."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = str(device)
    match = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", text)
    if match is None or (match[1] != "cuda" and match[2] is not None):
        raise ValueError(f"--device {text}: expected auto, cpu, cuda, cuda:N or mps")
    if match[1] == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {text}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if match[2] is not None and int(match[2]) >= count:
            raise ValueError(f"--device {text}: this machine has {count} CUDA device"
                             f"{'s' * (count != 1)} (cuda:0 to cuda:{count - 1})")
    if match[1] == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {text}: MPS is not available on this machine")
    return torch.device(text)


@dataclasses.dataclass
class Run:
    """A loaded run directory: its config, its split and its best model."""

    path: Path
    config: RunConfig
    split: Split
    model: FactorRecommender
    best_epoch: int


def load_run(run_dir: str | Path, device: str | torch.device | None = "cpu") -> Run:
    """Load a run directory written by :func:`disentangle.train.run.fit` with its best model,
    every file verified (checksums, the run's signature, finite weights)."""
    dev = resolve_device(device)
    folder = RunFolder(run_dir)
    cfg = folder.read_config()
    split = folder.load_split()
    model = MODELS[cfg.model_name](cfg.model, split.train)
    if not os.path.lexists(folder.file(BEST)):
        raise CheckpointError(f"{folder.path}: no {BEST} (the run stopped before its first "
                              f"evaluation; continue it with fit --resume)")
    state, _, meta = folder.read_model(BEST, model)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{folder.file(BEST)}: does not match the config "
                              f"({str(e).splitlines()[0]})") from None
    model.to(dev).eval()
    return Run(folder.path, cfg, split, model, int(meta.get("epoch", 0)))
