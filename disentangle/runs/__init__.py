"""The run folder's one owner: file names, lock, checksums, config, split, metrics.

:class:`RunFolder` is the only code that knows a run folder's files (see
:mod:`disentangle.runs.folder` for the layout and the guarantees); :func:`load_run` loads a
run back for evaluation, recommendations and reports; :mod:`disentangle.runs.checkpoint` is
the file format (safetensors with a checksum, atomic writes, bounded reads). Training lives
in :mod:`disentangle.train`, which writes through this package.
"""
from .checkpoint import (
    CheckpointError,
    atomic_write,
    load_checkpoint,
    read_json,
    save_checkpoint,
    write_json,
)
from .folder import (
    BEST,
    CONFIG,
    DATA,
    FILES,
    LAST,
    METRICS,
    RESULTS,
    SPLIT,
    RunFolder,
    RunFolderError,
    default_path,
    read_config,
    read_metrics,
)
from .loading import Run, load_run, resolve_device

__all__ = [
    "BEST",
    "CONFIG",
    "DATA",
    "FILES",
    "LAST",
    "METRICS",
    "RESULTS",
    "SPLIT",
    "CheckpointError",
    "Run",
    "RunFolder",
    "RunFolderError",
    "atomic_write",
    "default_path",
    "load_checkpoint",
    "load_run",
    "read_config",
    "read_json",
    "read_metrics",
    "resolve_device",
    "save_checkpoint",
    "write_json",
]
