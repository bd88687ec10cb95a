"""The run folder: its file names, its owner, its config, split, checkpoints and metrics.

==================  ===========================================================================
``config.yaml``     the resolved config (and the version that wrote it)
``data.json``       raw user/item ids, titles, category names
``split.safetensors``  training pairs, validation/test history and targets, categories, protocol,
                    seed, and the SHA-256 of ``data.json``
``metrics.jsonl``   one record per epoch
``best.safetensors``   the best model by validation, or the last one without validation
``last.safetensors``   the resumable state: model, optimiser, step, early stopping, RNG states
``results.json``    final validation (if any) and test metrics of the model and of popularity
==================  ===========================================================================

**One owner.** A process that trains into the folder holds an exclusive advisory lock
(``flock``) on the folder itself for the whole run; a second ``fit`` or ``fit --resume`` into
it fails at once. The lock is on the folder's own descriptor, so it adds no file: an empty
folder stays empty, and a lock dies with its process (``kill -9`` included).

**What defines the model is checked.** Every model checkpoint records the run's
*signature*: the resolved config (all of it but ``train.epochs``, which ``fit --resume
--epochs`` may raise) and the SHA-256 of ``split.safetensors``, which in turn records the
SHA-256 of ``data.json``. Loading a model compares the signature with the folder's files, so
an edited ``config.yaml`` or a split from another run is refused, naming what differs.

**Bounded reads.** Every file is read through :mod:`disentangle.files`: regular files only (a
FIFO or a link to a device is refused before it is opened), sizes checked before reading. A
model checkpoint may be no larger than its model needs (plus the optimiser's state for
``last.safetensors``, plus 16 MiB of header room); ``config.yaml`` at most 1 MiB.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor

from .. import __version__, files
from ..config import RunConfig, flat_keys, from_dict
from ..data import Split
from ..models import MODELS
from ..models.base import FactorRecommender
from .checkpoint import (
    TEMPORARY_GLOB,
    CheckpointError,
    atomic_write,
    load_checkpoint,
    non_finite,
    read_bytes,
    save_checkpoint,
    write_json,
)
from .split import load_split, save_split

try:
    import fcntl
except ImportError:  # not POSIX: runs go unlocked
    fcntl = None

CONFIG, DATA, SPLIT, METRICS = "config.yaml", "data.json", "split.safetensors", "metrics.jsonl"
BEST, LAST, RESULTS = "best.safetensors", "last.safetensors", "results.json"
#: Every file a run folder holds (``inspect`` adds its own subfolder).
FILES = (CONFIG, DATA, SPLIT, METRICS, BEST, LAST, RESULTS)
#: A model checkpoint names the model's tensors by their state-dict key after this prefix.
MODEL_PREFIX = "model."

MiB = 1 << 20
CONFIG_BYTES = MiB
#: How many model-sized blocks a checkpoint may hold: the model; the model and Adam's two
#: moments (plus the RNG states and step counters, inside the header room).
_MODEL_COPIES = {BEST: 1, LAST: 3}
_HEADER_ROOM = 16 * MiB

log = logging.getLogger(__name__)


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked: not empty for a new run, or busy."""


def config_signature(cfg: RunConfig) -> dict[str, Any]:
    """The part of ``cfg`` that defines the model, as plain JSON values: everything but
    ``train.epochs``."""
    d = json.loads(json.dumps(cfg.to_dict()))
    del d["train"]["epochs"]
    return d




class RunFolder:
    """The run folder at ``path``; the one place that knows its files.

    The folder learns the run's signature when it writes or reads its config and split
    (:meth:`write_config`, :meth:`read_config`, :meth:`save_split`, :meth:`load_split`); model
    checkpoints it saves then carry that signature and those it loads are checked against it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._config: dict[str, Any] | None = None
        self._split_sha256: str | None = None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """The path of the run file ``name`` (one of :data:`FILES`)."""
        return self.path / name

    # -- ownership ----------------------------------------------------------------------------
    def check_new(self) -> None:
        """:class:`RunFolderError` unless the folder is absent or empty (a new run's place)."""
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise RunFolderError(f"{self.path}: exists and is not a folder")
        if any(self.path.iterdir()):
            raise RunFolderError(f"{self.path}: exists and is not empty (use --resume to "
                                 f"continue a run, or choose another --out)")

    def create(self) -> bool:
        """Make the folder (and its parents); whether it was created here."""
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        return created

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Own the folder: an exclusive ``flock`` on it until the block ends, or at once
        :class:`RunFolderError` if another process holds it."""
        if fcntl is None:
            yield
            return
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
                     | getattr(os, "O_CLOEXEC", 0))
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunFolderError(f"{self.path}: another process is training into this run "
                                     f"folder (fit or fit --resume); wait for it to end or "
                                     f"choose another --out") from None
            yield
        finally:
            os.close(fd)  # releases the lock

    def remove_temporary(self) -> list[Path]:
        """Delete the temporary files that writes killed mid-way left (only the folder's own
        files' ones); return them. Call while holding :meth:`lock`."""
        stale = [p for name in FILES for p in self.path.glob(TEMPORARY_GLOB.format(name=name))]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def discard(self, created: bool) -> None:
        """Remove what a new run wrote (the folder too if ``created``): a run that failed
        before its first epoch leaves nothing that blocks its ``--out``. Only for a folder that
        :meth:`check_new` found empty, while holding :meth:`lock`."""
        if created:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for p in self.path.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    # -- config -------------------------------------------------------------------------------
    def write_config(self, cfg: RunConfig) -> None:
        """Write the resolved config (with this version) to ``config.yaml``."""
        atomic_write(self.file(CONFIG), yaml.safe_dump(
            {**cfg.to_dict(), "version": __version__}, sort_keys=False).encode())
        self._config = config_signature(cfg)

    def read_config(self) -> RunConfig:
        """The resolved config of the run, checked to come from a compatible version."""
        path = self.file(CONFIG)
        if not os.path.lexists(path):
            raise CheckpointError(f"{self.path}: not a run directory (no {CONFIG})")
        blob = read_bytes(path, CONFIG_BYTES)
        try:
            raw = yaml.safe_load(blob.decode())
        except (yaml.YAMLError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: not valid YAML") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
            raise CheckpointError(f"{path}: not a disentangle run config")
        version = raw.pop("version", None)
        if version is None:
            raise CheckpointError(f"{path}: no version line (cut short, or not written by "
                                  f"disentangle fit)")
        if str(version).split(".")[:2] != __version__.split(".")[:2]:
            raise CheckpointError(f"{self.path}: written by disentangle {version}, this is "
                                  f"{__version__}; re-run fit with this version")
        cls = MODELS.get(raw["model"].get("name"))
        if cls is not None:
            raw["model"] = {**cls.saved_run_defaults, **raw["model"]}
        try:
            cfg = from_dict(raw)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
        self._config = config_signature(cfg)
        return cfg

    # -- split --------------------------------------------------------------------------------
    def has_split(self) -> bool:
        return os.path.lexists(self.file(SPLIT))

    def save_split(self, split: Split) -> None:
        """Write ``split.safetensors`` and ``data.json``."""
        self._split_sha256 = save_split(split, self.file(SPLIT), self.file(DATA))

    def load_split(self) -> Split:
        """The run's split, both files verified."""
        split, self._split_sha256 = load_split(self.file(SPLIT), self.file(DATA))
        return split

    # -- model checkpoints --------------------------------------------------------------------
    def signature(self) -> dict[str, Any]:
        """What a model checkpoint of this run records of the run (empty until the folder
        has written or read both its config and its split)."""
        if self._config is None or self._split_sha256 is None:
            return {}
        return {"config": self._config, "split_sha256": self._split_sha256}

    def save_model(self, name: str, state: dict[str, Tensor], meta: dict[str, Any],
                   extra: dict[str, Tensor] | None = None) -> None:
        """Save the model ``state`` (a state dict) and ``extra`` tensors (the optimiser's, the
        RNG states) as the checkpoint ``name`` (``best`` or ``last``), signed with the run's
        signature."""
        signature = self.signature()
        tensors = {f"{MODEL_PREFIX}{k}": v for k, v in state.items()} | (extra or {})
        save_checkpoint(self.file(name), tensors, {**meta, "run": signature} if signature
                        else meta)

    def read_model(self, name: str, model: FactorRecommender,
                   ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Any]]:
        """``(model state, all tensors, meta)`` of the checkpoint ``name``, verified to fit
        ``model`` and this run: the model's name, the run's signature, finite values, the
        parameters' names and shapes; and no larger than such a checkpoint can be."""
        path = self.file(name)
        expected = model.state_dict()
        model_bytes = sum(t.numel() * t.element_size() for t in expected.values())
        cap = _MODEL_COPIES.get(name, 1) * model_bytes + _HEADER_ROOM
        try:
            size = files.check_regular(path).st_size
        except files.FileError as e:
            raise CheckpointError(str(e)) from None
        if size > cap:
            raise CheckpointError(f"{path}: {size / MiB:.1f} MiB, more than a {name} of this "
                                  f"model can hold ({cap / MiB:.1f} MiB)")
        tensors, meta = load_checkpoint(path, max_bytes=cap)
        if meta.get("model") != model.name:
            raise CheckpointError(f"{path}: holds a {meta.get('model')!r} model, the config "
                                  f"names {model.name!r}")
        self._check_signature(path, meta.get("run"))
        state = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items()
                 if k.startswith(MODEL_PREFIX)}
        bad = non_finite(state)
        if bad:
            raise CheckpointError(f"{path}: the model holds NaN or infinite values (in "
                                  f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); a "
                                  f"diverged model is never used")
        wrong = sorted(set(state) ^ set(expected)) or [
            k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
        if wrong:
            raise CheckpointError(f"{path}: does not match the config (parameters "
                                  f"{', '.join(wrong[:3])}{', ...' if len(wrong) > 3 else ''} "
                                  f"differ)")
        return state, tensors, meta

    def _check_signature(self, path: Path, saved: dict[str, Any] | None) -> None:
        if not saved:  # checkpoints written before signatures (0.1.0): unchecked
            return
        ours = self.signature()
        if ours.get("config") is not None and saved.get("config") != ours["config"]:
            was, now = flat_keys(saved.get("config") or {}), flat_keys(ours["config"])
            diff = [f"{k}: {was.get(k, 'absent')!r} -> {now.get(k, 'absent')!r}"
                    for k in sorted(set(was) | set(now))
                    if k not in was or k not in now or was[k] != now[k]]
            raise CheckpointError(f"{self.file(CONFIG)}: differs from the config {path.name} "
                                  f"was trained with ({'; '.join(diff[:4])}"
                                  f"{'; ...' if len(diff) > 4 else ''}); a run's config cannot "
                                  f"change after it started (only fit --resume --epochs may "
                                  f"raise train.epochs): restore it, or start a new run")
        if ours.get("split_sha256") is not None \
                and saved.get("split_sha256") != ours["split_sha256"]:
            raise CheckpointError(f"{self.file(SPLIT)}: not the split {path.name} was trained "
                                  f"on (its checksum differs); the folder mixes files of "
                                  f"different runs")

    # -- metrics and results ------------------------------------------------------------------
    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch records (lines cut short by a kill are skipped)."""
        path = self.file(METRICS)
        if not os.path.lexists(path):
            return []
        records = []
        for line in read_bytes(path).decode(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # empty, or cut short by a kill mid-write
            if isinstance(record, dict):
                records.append(record)
        return records

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch's record to ``metrics.jsonl``."""
        with open(self.file(METRICS), "a") as f:
            f.write(json.dumps(record) + "\n")

    def keep_metrics(self, epochs: int) -> None:
        """Keep the records of the first ``epochs`` epochs only (after a resume: drop those of
        epochs that ran after the checkpoint, and a line cut short)."""
        kept = [r for r in self.read_metrics() if r.get("epoch", math.inf) <= epochs]
        atomic_write(self.file(METRICS), "".join(json.dumps(r) + "\n" for r in kept).encode())

    def write_results(self, results: dict[str, Any]) -> None:
        write_json(self.file(RESULTS), results)


def default_path(cfg: RunConfig, root: str | Path = "runs") -> Path:
    """``root/<model>-<dataset>-<time>``; a ``csv:PATH`` dataset is named by its file name
    (never by a path), reduced to letters, digits, ``.``, ``_`` and ``-``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(cfg.data.dataset).name).strip("._") or "data"
    return Path(root) / f"{cfg.model_name}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of the run in ``run_dir``."""
    return RunFolder(run_dir).read_metrics()


def read_config(run_dir: str | Path) -> RunConfig:
    """The resolved config of the run in ``run_dir``."""
    return RunFolder(run_dir).read_config()
