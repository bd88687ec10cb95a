"""Files on disk: tensors in safetensors, everything else in JSON, every write atomic.

Nothing here unpickles: loading a checkpoint can never run code. Every write is atomic
(temporary file in the same folder, fsync, rename), so a crash mid-write leaves the previous
file intact; the temporary file is named ``.<name>.<random>.tmp`` (see
:data:`TEMPORARY_GLOB`), so a run folder can find and remove the ones a killed process left.
New files honour the process's umask, like any file :func:`open` creates.

A checkpoint's header records the format version and a SHA-256 over its tensors (name,
dtype, shape, bytes) and its JSON meta data, both verified on load. Reads are bounded
(:mod:`disentangle.files`): only regular files, and no more than ``max_bytes``.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .. import files

FORMAT_VERSION = 1
#: The pattern of :func:`atomic_write`'s temporary files, for the file ``name``.
TEMPORARY_GLOB = ".{name}.*.tmp"


class CheckpointError(RuntimeError):
    """A checkpoint or run file that cannot be trusted (missing, truncated, tampered, foreign,
    oversized, not a regular file, or holding a diverged model)."""


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file.

    The temporary file is created with mode ``0o666`` and so gets the umask's permissions
    (``tempfile.mkstemp`` would make it ``0o600``)."""
    path = Path(path)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
                         | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON, atomically."""
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_bytes(path: str | Path, max_bytes: int = files.MAX_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (at most ``max_bytes``), or
    :class:`CheckpointError` naming the file and the problem."""
    try:
        return files.read_bytes(path, max_bytes=max_bytes, decompress=False)
    except files.FileError as e:
        raise CheckpointError(str(e)) from None


def read_json(path: str | Path, max_bytes: int = files.MAX_BYTES) -> Any:
    """The JSON content of ``path``, bounded as :func:`read_bytes`."""
    try:
        return json.loads(read_bytes(path, max_bytes))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not valid JSON") from None


def _digest(tensors: dict[str, Tensor], meta: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():  # an empty tensor may have stride 0 (numpy's do): no byte view of it
            h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> str:
    """Save ``tensors`` and the JSON-serialisable ``meta`` atomically into one safetensors file;
    return its SHA-256.

    ``meta`` travels in the file's header with the format version and the SHA-256 over the
    tensors and ``meta``, so one atomic rename replaces the whole checkpoint. (A ``sha256``
    key in ``meta``, as :func:`load_checkpoint` returns it, is replaced.)
    """
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: v for k, v in meta.items() if k != "sha256"}
    meta["format_version"] = FORMAT_VERSION
    digest = _digest(tensors, meta)
    header = {"disentangle": json.dumps({**meta, "sha256": digest})}
    atomic_write(path, st_save(tensors, metadata=header))
    return digest


def _header_meta(blob: bytes) -> dict[str, Any]:
    """The ``disentangle`` entry of a safetensors header: 8 bytes of little-endian header
    length, then the JSON header, whose ``__metadata__`` holds string values."""
    n = int.from_bytes(blob[:8], "little")
    if len(blob) < 8 or n > len(blob) - 8:
        raise ValueError("header past the end of the file")
    header = json.loads(blob[8:8 + n])
    return json.loads(header["__metadata__"]["disentangle"])


def load_checkpoint(path: str | Path, max_bytes: int = files.MAX_BYTES,
                    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load and verify a checkpoint written by :func:`save_checkpoint`.

    The file is read once, as a regular file of at most ``max_bytes`` (a FIFO, a device or an
    oversized file is refused before a byte is read). The returned meta data keeps its
    ``sha256``: the checkpoint's identity, which other files may record.
    """
    path = Path(path)
    blob = read_bytes(path, max_bytes)
    try:
        tensors = st_load(blob)
        meta = _header_meta(blob)
        if not isinstance(meta, dict):
            raise TypeError("meta data is not a mapping")
    except Exception:  # noqa: BLE001 (safetensors raises several error types for bad headers)
        raise CheckpointError(f"{path}: not a disentangle checkpoint (truncated or not "
                              f"safetensors)") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')!r}; this "
                              f"version of disentangle reads format {FORMAT_VERSION}")
    digest = meta.pop("sha256", None)
    if digest != _digest(tensors, meta):
        raise CheckpointError(f"{path}: checksum mismatch (the checkpoint was modified)")
    return tensors, {**meta, "sha256": digest}


def non_finite(tensors: dict[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity (one device sync)."""
    floats = [(name, t) for name, t in tensors.items() if t.is_floating_point() and t.numel()]
    if not floats:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in floats]).cpu()
    return [name for (name, _), ok in zip(floats, finite.tolist()) if not ok]
