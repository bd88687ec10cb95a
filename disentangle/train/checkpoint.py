"""Checkpoints and run files on disk: tensors in safetensors, everything else in JSON.

Nothing here unpickles: loading a checkpoint can never run code. Every write is atomic
(temporary file, fsync, rename), so a crash mid-write leaves the previous file intact. A
checkpoint's header records the format version and a SHA-256 of its content, both verified
on load.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint or run file that cannot be trusted (missing, truncated, tampered, foreign)."""


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read ({e})") from None


def _digest(tensors: dict[str, Tensor], meta: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():  # an empty tensor may have stride 0 (numpy's do): no byte view of it
            h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Save ``tensors`` and the JSON-serialisable ``meta`` atomically into one safetensors file.

    ``meta`` travels in the file's header with the format version and a SHA-256 over the
    tensors and ``meta``, so one atomic rename replaces the whole checkpoint.
    """
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {**meta, "format_version": FORMAT_VERSION}
    header = {"disentangle": json.dumps({**meta, "sha256": _digest(tensors, meta)})}
    atomic_write(path, st_save(tensors, metadata=header))


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load and verify a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    try:
        tensors = st_load(blob)
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {})["disentangle"])
    except Exception:  # noqa: BLE001 (safetensors raises several error types for bad headers)
        raise CheckpointError(f"{path}: not a disentangle checkpoint (truncated or not "
                              f"safetensors)") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')!r}; this "
                              f"version of disentangle reads format {FORMAT_VERSION}")
    digest = meta.pop("sha256", None)
    if digest != _digest(tensors, meta):
        raise CheckpointError(f"{path}: checksum mismatch (the checkpoint was modified)")
    return tensors, meta


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into named tensors and JSON-serialisable rest."""
    state = opt.state_dict()
    tensors, plain = {}, {}
    for pid, s in state["state"].items():
        plain[str(pid)] = {}
        for k, v in s.items():
            if isinstance(v, Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                plain[str(pid)][k] = v
    return tensors, {"state": plain, "param_groups": state["param_groups"]}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict] = {int(pid): dict(v) for pid, v in meta["state"].items()}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = t
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
