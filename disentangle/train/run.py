"""A run from config to run folder: build the data and model, train, report.

The run folder itself (its files, lock, checksums, config, split and metrics) belongs to
:mod:`disentangle.runs`; this module decides what goes into it and when:

- :func:`fit` builds the data, split and model *before* it creates anything, so a bad input
  leaves no folder behind; it then owns the folder (an exclusive lock) for the whole run. A
  run that fails before its first epoch is saved removes what it wrote.
- :func:`resume` continues a stopped run under the same lock, after removing the temporary
  files killed writes left. ``epochs`` may raise the run's ``train.epochs`` (or lower it to
  no fewer than the epochs already done): the config then still says what the run did.
- SIGTERM (a scheduler's stop) is handled as Ctrl-C: the last finished epoch stays saved and
  :class:`RunInterrupted` says how to continue.
- Under ``torchrun`` both join the process group (:mod:`disentangle.train.distributed`):
  every rank builds the same split and model and trains its share; rank 0 alone creates,
  locks and writes the folder (the others read it to resume). A rank that dies ends the
  group (torchrun stops the others); the folder keeps the last epoch every rank finished.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, RunConfig, TrainConfig
from ..data import InteractionData, LoadOptions, Split, load_dataset, load_split_dir, make_split
from ..metrics.ranking import popularity_scorer
from ..models import MODELS
from ..models.recommender import Recommender
from ..runs import CONFIG, CheckpointError, Run, RunFolder, load_run, read_config, resolve_device
from . import distributed
from .trainer import Trainer, finite_scores

__all__ = ["Run", "RunInterrupted", "build_model", "build_split", "final_results", "fit",
           "load_run", "read_config", "resolve_device", "resume"]

log = logging.getLogger(__name__)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM: ``signal_name``) during :func:`fit` or :func:`resume`.
    ``saved_epoch`` is the epoch whose checkpoint is kept in ``run_dir``; :func:`resume`
    continues from there."""

    def __init__(self, run_dir: Path, saved_epoch: int | None, epochs: int,
                 signal_name: str = "SIGINT") -> None:
        self.run_dir, self.saved_epoch, self.epochs = run_dir, saved_epoch, epochs
        self.signal_name = signal_name
        super().__init__("nothing is saved yet" if saved_epoch is None else
                         f"the checkpoint of epoch {saved_epoch} of {epochs} is kept in {run_dir}")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, like Ctrl-C."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`_Terminated` in the block (on the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_split(cfg: RunConfig) -> Split:
    """Load the configured dataset and apply the configured protocol (or ready split)."""
    d = cfg.data
    options = LoadOptions.from_config(d)
    if d.split_dir is not None:
        try:
            catalog = load_dataset(d.dataset, d.data_dir, options).data
        except FileNotFoundError:
            catalog = None  # titles and genres are optional for a ready split
        return load_split_dir(d.split_dir, catalog, d.dataset)
    source = load_dataset(d.dataset, d.data_dir, options)
    extra: dict[str, Any] = {}
    if d.protocol == "heldout":
        h = d.heldout_users
        extra["heldout_users"] = int(h) if h >= 1 else float(h)
    elif d.protocol == "given":
        extra["valid_ratio"] = d.valid_ratio
    if d.protocol == "heldout":
        _check_heldout_size(d.dataset, source.data, extra["heldout_users"])
    split = make_split(source, d.protocol, d.seed, **extra)
    _check_split(d.dataset, source.data, split,
                 refit=d.protocol == "given" and d.valid_ratio == 0)
    return split


def _check_heldout_size(name: str, data: InteractionData, heldout: float) -> None:
    n = data.num_users
    h = round(heldout * n) if isinstance(heldout, float) else int(heldout)
    if h < 1 or 2 * h >= n:
        raise ValueError(f"dataset {name} is too small for the heldout protocol: {n} user"
                         f"{'s' * (n != 1)} after filtering, and data.heldout_users={heldout} "
                         f"holds out {h} validation and {h} test users; the protocol needs at "
                         f"least 1 of each and 1 training user (change data.heldout_users or "
                         f"use --protocol ratio)")


def _check_split(name: str, data: InteractionData, split: Split, refit: bool) -> None:
    """A split every metric can be computed on (with ``refit``, no validation set), or a
    one-line error naming the sizes."""
    sizes = (f"{split.train.num_interactions} training interactions, {len(split.valid)} "
             f"validation and {len(split.test)} test users")
    usable = split.train.num_interactions and (split.has_validation or refit) and len(split.test)
    if not usable:
        most = int(data.user_degree().max(initial=0))
        raise ValueError(f"dataset {name} is too small for the {split.protocol} protocol: it "
                         f"leaves {sizes} ({data.num_users} users with at most {most} "
                         f"interactions each, {data.num_items} items)")
    for part in ("test",) if refit else ("valid", "test"):
        es = getattr(split, part)
        if es.num_without_target == len(es):
            raise ValueError(f"dataset {name} is too small for the {split.protocol} protocol: "
                             f"none of its {len(es)} {part} users has target items ({sizes})")
    missing = split.valid.num_without_target
    if missing:
        log.warning(f"{missing} of {len(split.valid)} validation users have no target items "
                    f"(too few interactions); they count as 0 in every validation mean")


def _check_protocol(model_name: str, protocol: str) -> None:
    cls = MODELS[model_name]
    if protocol == "heldout" and not cls.supports_new_users:
        raise ValueError(f"model {cls.name!r} cannot score users unseen in training; use "
                         f"data.protocol=ratio or given")


def build_model(cfg: RunConfig, split: Split) -> Recommender:
    """The configured model on the split's training data, seeded by ``train.seed``; a model
    whose sizes cannot be allocated is a :class:`~disentangle.config.ConfigError` naming them."""
    cls = MODELS[cfg.model_name]
    _check_protocol(cfg.model_name, split.protocol)
    torch.manual_seed(cfg.train.seed)
    try:
        return cls(cfg.model, split.train)
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, MemoryError) and "alloc" not in str(e):
            raise
        sizes = {k: v for k, v in dataclasses.asdict(cfg.model).items()
                 if isinstance(v, int) and not isinstance(v, bool)}
        raise ConfigError(f"model: {cfg.model_name} with {sizes} on {split.train.num_items} "
                          f"items does not fit in memory") from None


# -- the whole run -------------------------------------------------------------------------
def final_results(model: Recommender, split: Split, train: TrainConfig,
                  best_epoch: int) -> dict[str, Any]:
    """Validation (if any) and test metrics of ``model`` and of popularity (sharded over
    the ranks of a process group)."""
    device = next(model.parameters()).device
    pop = popularity_scorer(split.train, device)
    model.eval()

    def both(score) -> dict[str, Any]:
        return {name: distributed.evaluate(score, getattr(split, name), train.ks,
                                           train.eval_chunk, device)
                for name in ("valid", "test") if len(getattr(split, name))}

    return {"protocol": split.protocol, "best_epoch": best_epoch,
            **both(finite_scores(model.score)),
            "popularity": both(pop)}


def _train(folder: RunFolder, cfg: RunConfig, split: Split, trainer: Trainer) -> dict[str, Any]:
    """Train the remaining epochs into ``folder``; write and return the final results."""
    try:
        with _sigterm_as_interrupt():
            trainer.fit()
            results = final_results(trainer.model, split, cfg.train, trainer.best_epoch)
            if trainer.writes:
                folder.write_results(results)
    except KeyboardInterrupt as e:
        raise RunInterrupted(folder.path, trainer.saved_epoch, cfg.train.epochs,
                             "SIGTERM" if isinstance(e, _Terminated) else "SIGINT") from None
    return results


def fit(cfg: RunConfig, run_dir: str | Path, device: str | None = None, progress: bool = True,
        on_start: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Train ``cfg`` into the new run folder ``run_dir`` (absent or empty) and return the
    final results (:func:`final_results`).

    The data, split and model are built before anything is written; the folder is then locked
    for the whole run (a second process training into it fails at once). A failure before
    the first epoch is saved removes what the run wrote; Ctrl-C or SIGTERM raises
    :class:`RunInterrupted` with the last completed epoch saved (continue with
    :func:`resume`). ``on_start(run_dir)`` is called once the folder exists, before training.
    Under ``torchrun`` every rank calls it and rank 0 alone writes (see the module's notes).
    """
    folder = RunFolder(run_dir)
    with distributed.process_group(resolve_device(device)) as dev:
        folder.check_new()
        if cfg.data.split_dir is None:
            _check_protocol(cfg.model_name, cfg.data.protocol)  # before the slow part
        split = build_split(cfg)
        model = build_model(cfg, split)
        distributed.barrier()  # every rank saw an empty folder before rank 0 fills it
        if distributed.rank():
            return _train(folder, cfg, split, Trainer(model, split, cfg.train, folder, dev,
                                                      progress))
        created = folder.create()
        with folder.lock():
            folder.check_new()  # again, as the owner: another fit may have come first
            trainer = None
            try:
                folder.write_config(cfg)
                folder.save_split(split)
                if on_start is not None:
                    on_start(folder.path)
                trainer = Trainer(model, split, cfg.train, folder, dev, progress)
                return _train(folder, cfg, split, trainer)
            except Exception:
                if trainer is None or not trainer.epoch:  # no trained epoch to keep
                    folder.discard(created)
                raise


def resume(run_dir: str | Path, epochs: int | None = None, device: str | None = None,
           progress: bool = True, on_start: Callable[[Path], None] | None = None,
           ) -> dict[str, Any]:
    """Continue the stopped (or finished) run in ``run_dir`` with its own config and return
    the final results.

    ``epochs`` sets ``train.epochs`` (written to ``config.yaml``): more continues a finished
    run, fewer than the run has already done is refused, so the config always says what the
    run did. A run killed before its split was saved rebuilds it (the split is seeded); one
    killed before its first checkpoint starts from epoch 0. Every checkpoint is checked
    against the folder's config and split: an edited ``config.yaml`` is refused.
    """
    folder = RunFolder(run_dir)
    with distributed.process_group(resolve_device(device)) as dev:
        folder.read_config()  # a run folder at all? (before taking its lock)
        if distributed.rank():  # rank 0 owns the folder; the others read it once it is ready
            distributed.barrier()
            return _resume(folder, folder.read_config(), folder.load_split(), epochs, dev,
                           progress, None)
        with folder.lock():
            stale = folder.remove_temporary()
            if stale:
                log.info(f"removed {len(stale)} temporary file(s) left by killed writes")
            cfg = folder.read_config()
            if folder.has_split():
                split = folder.load_split()
            else:
                split = build_split(cfg)
                folder.save_split(split)
            distributed.barrier()
            return _resume(folder, cfg, split, epochs, dev, progress, on_start)


def _resume(folder: RunFolder, cfg: RunConfig, split: Split, epochs: int | None,
            dev: torch.device, progress: bool, on_start: Callable[[Path], None] | None,
            ) -> dict[str, Any]:
    """:func:`resume` once the folder is ready: restore the run, set its epochs, train."""
    trainer = Trainer(build_model(cfg, split), split, cfg.train, folder, dev, progress)
    trainer.resume()
    if epochs is not None:
        if epochs < trainer.epoch:
            raise ValueError(f"--epochs {epochs}: the run in {folder.path} has already "
                             f"done {trainer.epoch} epochs; give --epochs "
                             f"{trainer.epoch} or more")
        if epochs != cfg.train.epochs:
            cfg.train.epochs = epochs  # the trainer's config too
            if trainer.writes:
                folder.write_config(cfg)
    elif cfg.train.epochs < trainer.epoch:
        raise CheckpointError(f"{folder.file(CONFIG)}: train.epochs={cfg.train.epochs}, "
                              f"but the run has done {trainer.epoch} epochs")
    if on_start is not None:
        on_start(folder.path)
    return _train(folder, cfg, split, trainer)
