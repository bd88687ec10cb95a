"""The one training loop every model shares.

Each epoch runs ``model.batches`` / ``model.loss`` with Adam, evaluates on the validation set,
appends a JSON line to ``metrics.jsonl``, keeps the best model by ``config.select`` (the last
one when the split has no validation users), and saves a resumable checkpoint (model,
optimiser, global step, early-stopping state and RNG states), so a killed run continues where
its last epoch ended and reaches the same result. The initial state is saved too (epoch 0),
so a run killed in its first epoch resumes as well. The files are written through
:class:`~disentangle.runs.RunFolder`, which names them and signs every checkpoint with the
run's config and split.

A diverged model is never kept: after every epoch the parameters are checked to be finite
(one ``isfinite`` per tensor, one device sync), and evaluation checks the scores; a NaN or an
infinity stops the run with :class:`NonFiniteModel` before anything of that epoch is saved, so
``best.safetensors`` and ``last.safetensors`` always hold a finite model.

On CPU, training runs with deterministic kernels, so the same seed gives the same bits in any
process, resumed or not.

Under ``torchrun`` (a process group joined by :func:`~disentangle.train.distributed.process_group`)
the same loop trains data-parallel: each rank takes its rows of every batch, the model is
wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, evaluation is sharded over
users, and rank 0 alone writes the run folder (see :mod:`disentangle.train.distributed`).
Checkpoints then hold every rank's RNG state and the world size, and resume only with as
many processes.

Progress: bars on a terminal (tqdm), one plain line per epoch on stderr otherwise (a
redirected log); nothing with ``progress=False``.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data.splits import Split
from ..models.recommender import ClosedFormRecommender, Recommender
from ..runs.checkpoint import CheckpointError, non_finite
from ..runs.folder import BEST, LAST, RunFolder, read_metrics
from . import distributed
from .checkpoint import load_optimizer, optimizer_tensors

__all__ = ["Diverged", "NonFiniteLoss", "NonFiniteModel", "Trainer", "read_metrics"]


class Diverged(RuntimeError):
    """Training diverged (a NaN or an infinity); almost always the config's doing (a learning
    rate or a temperature out of scale)."""


class NonFiniteLoss(Diverged):
    """Training produced a NaN or infinite loss."""


class NonFiniteModel(Diverged):
    """The model's parameters or scores hold a NaN or an infinity."""


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


class Trainer:
    """Train ``model`` on ``split`` and keep the best epoch.

    Args:
        model: a :class:`~disentangle.models.recommender.Recommender`.
        split: the data, from :func:`~disentangle.data.make_split`.
        config: optimisation and selection settings.
        run_dir: the run folder (a path or a :class:`~disentangle.runs.RunFolder`) where
            checkpoints and ``metrics.jsonl`` go (``None``: keep nothing on disk).
        device: torch device of the model.
        progress: show progress (bars on a terminal, else a line per epoch); rank 0 only.
    """

    def __init__(self, model: Recommender, split: Split, config: TrainConfig,
                 run_dir: str | Path | RunFolder | None = None,
                 device: str | torch.device = "cpu", progress: bool = True) -> None:
        self.model = model
        self.split = split
        self.config = config
        self.folder = run_dir if isinstance(run_dir, RunFolder) or run_dir is None \
            else RunFolder(run_dir)
        self.device = torch.device(device)
        self.world = distributed.world_size()
        self.rank = distributed.rank() if self.world > 1 else 0
        self.writes = self.folder is not None and self.rank == 0  # rank 0 alone writes
        self.progress = progress and self.rank == 0
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                          weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch = 0  # epochs completed
        self.step = 0  # updates made
        self.best_value = -math.inf
        self.best_epoch = 0
        self.stale = 0  # evaluations since the last improvement
        self.best_state: dict[str, torch.Tensor] | None = None
        self.saved_epoch: int | None = None  # epoch of the checkpoint on disk
        self._ddp: DistributedDataParallel | None = None
        if self.rank:  # each rank its own stream for dropout and noise; rank 0 keeps the seed's
            torch.manual_seed(int(np.random.SeedSequence([config.seed, self.rank])
                                  .generate_state(1)[0]))

    # -- state ----------------------------------------------------------------------------
    def _state_meta(self) -> dict[str, Any]:
        meta = {"epoch": self.epoch, "step": self.step, "best_value": self.best_value,
                "best_epoch": self.best_epoch, "stale": self.stale, "model": self.model.name}
        if self.world > 1:
            meta["world_size"] = self.world
        return meta

    def _rng_states(self) -> dict[str, Tensor]:
        """torch's RNG state of every rank (rank ``r > 0`` as ``rng.torch.r``): a collective
        in a process group, so called on every rank before an epoch's files are written."""
        if self.world == 1:
            return {"rng.torch": torch.get_rng_state()}
        states = distributed.gather_tensors(torch.get_rng_state())
        return {"rng.torch": states[0], **{f"rng.torch.{r}": s for r, s in
                                           enumerate(states) if r}}

    def save(self, rng: dict[str, Tensor] | None = None) -> None:
        """Write the resumable checkpoint ``last.safetensors`` (rank 0; every rank calls it,
        or gives the :meth:`_rng_states` it took)."""
        rng = self._rng_states() if rng is None else rng
        if self.writes:
            opt_tensors, opt_meta = optimizer_tensors(self.optimizer)
            extra = {**opt_tensors, **rng, "rng.batches": self.generator.get_state()}
            self.folder.save_model(LAST, self.model.state_dict(),
                                   {**self._state_meta(), "optimizer": opt_meta}, extra)
        self.saved_epoch = self.epoch

    def resume(self) -> None:
        """Restore the state saved by :meth:`save` in ``run_dir`` (a run killed before its
        first checkpoint starts again from epoch 0)."""
        if os.path.lexists(self.folder.file(LAST)):
            self._restore()
        if self.writes:  # drop metric lines of epochs after the checkpoint (and a cut line)
            self.folder.keep_metrics(self.epoch)

    def _restore(self) -> None:
        path = self.folder.file(LAST)
        state, tensors, meta = self.folder.read_model(LAST, self.model)
        saved_world = meta.get("world_size", 1)
        if saved_world != self.world:
            raise CheckpointError(
                f"{path}: saved by a run on {saved_world} process{'es' * (saved_world > 1)}, "
                f"resumed on {self.world}; resume it on {saved_world} (" +
                (f"torchrun --nproc_per_node={saved_world} ..." if saved_world > 1 else
                 "one process, without torchrun") + ")")
        try:
            self.model.load_state_dict(state)
            load_optimizer(self.optimizer, tensors, meta["optimizer"])
            torch.set_rng_state(tensors[f"rng.torch.{self.rank}" if self.rank else "rng.torch"])
            self.generator.set_state(tensors["rng.batches"])
            for key in ("epoch", "step", "best_value", "best_epoch", "stale"):
                setattr(self, key, meta[key])
            if os.path.lexists(self.folder.file(BEST)):
                self.best_state = self.folder.read_model(BEST, self.model)[0]
            elif self.best_epoch:
                raise CheckpointError(f"{self.folder.file(BEST)}: missing (the run's best "
                                      f"model, of epoch {self.best_epoch}, was saved there)")
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{path}: does not match the run config "
                                  f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
                from None
        self.saved_epoch = self.epoch

    # -- loop -----------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train for the remaining epochs; return the best epoch and its validation
        ``select`` value (``-inf`` without validation users)."""
        with _deterministic_kernels(self.device.type == "cpu"):
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        cfg = self.config
        self.model.to(self.device)
        self._ddp = self._data_parallel()
        if self.folder is not None and self.saved_epoch is None:
            self.save()  # epoch 0: a run killed in its first epoch can resume too
        stopped = bool(cfg.patience) and self.stale >= cfg.patience  # resumed after early stop
        epochs = tqdm(range(self.epoch, self.epoch if stopped else cfg.epochs), initial=self.epoch,
                      total=cfg.epochs, desc=f"{self.model.name}", unit="epoch",
                      disable=self._bars_off(), dynamic_ncols=True)
        for _ in epochs:
            record = self._train_epoch()
            self._check_finite(self.epoch + 1)
            self.epoch += 1
            improved = False
            postfix = {"loss": f"{record['loss']:.4g}"} if "loss" in record else {}
            if not self.split.has_validation:  # nothing to select on: the last epoch is the model
                improved = True
            elif self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs:
                record["valid"] = self.validate()
                value = record["valid"][cfg.select]
                postfix[cfg.select] = f"{value:.4f}"
                improved = value > self.best_value
                if improved:
                    self.best_value, self.stale = value, 0
                else:
                    self.stale += 1
            if improved:
                self.best_epoch = self.epoch
                self.best_state = {k: v.detach().clone() for k, v in
                                   self.model.state_dict().items()}
            if self.best_value > -math.inf:
                postfix["best"] = f"{self.best_value:.4f}@{self.best_epoch}"
            epochs.set_postfix(postfix)
            self._log_line(record, postfix)
            if self.folder is not None:
                rng = self._rng_states()  # a collective: before any file of the epoch
                with _deferred_interrupt():  # Ctrl-C here still saves this epoch whole
                    if improved and self.writes:
                        self.folder.save_model(BEST, self.best_state, {
                            **self._state_meta(), "valid": record.get("valid")})
                    if self.writes:
                        self.folder.append_metrics(record)
                    self.save(rng)
            if cfg.patience and self.stale >= cfg.patience:
                if self.rank == 0:
                    epochs.write(f"early stop after epoch {self.epoch}: no {cfg.select} "
                                 f"improvement in {cfg.patience} evaluations")
                break
        epochs.close()
        if self.best_state is None and self.writes \
                and not os.path.lexists(self.folder.file(BEST)):
            # no evaluation at all (epochs=0): the untrained model is the run's model
            self._check_finite(self.epoch)
            self.folder.save_model(BEST, self.model.state_dict(), self._state_meta())
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return {"best_epoch": self.best_epoch, cfg.select: self.best_value}

    def _bars_off(self) -> bool | None:
        """tqdm's ``disable``: off when ``progress`` is false; ``None`` (tqdm's own choice)
        draws bars on a terminal only, so a redirected log holds no control characters."""
        return None if self.progress else True

    def _log_line(self, record: dict[str, Any], postfix: dict[str, str]) -> None:
        """Where no bar is drawn (stderr is not a terminal) but progress is on: one plain
        line per epoch on stderr."""
        if not self.progress or sys.stderr.isatty():
            return
        fields = [f"{self.model.name} epoch {self.epoch}/{self.config.epochs}",
                  *(f"{k} {v}" for k, v in postfix.items()), f"({record['seconds']:.1f}s)"]
        print(" ".join(fields), file=sys.stderr, flush=True)

    def _data_parallel(self) -> DistributedDataParallel | None:
        """``model.loss`` under DistributedDataParallel in a process group (it broadcasts rank
        0's parameters now and averages gradients in every backward); ``None`` in one
        process, or for a closed-form model (every rank solves the same problem)."""
        if self.world == 1 or isinstance(self.model, ClosedFormRecommender):
            return None
        ids = [self.device.index] if self.device.type == "cuda" else None
        # static graph: the same parameters take part in every update (some may never, such
        # as an unused bias), found once on the first update instead of on every one
        return DistributedDataParallel(distributed.LossModule(self.model), device_ids=ids,
                                       static_graph=True)

    def _update(self, batch: Any) -> tuple[Tensor, dict[str, float], float]:
        """One optimiser step on ``batch`` (this rank's rows of it in a process group);
        return the loss, its parts, and this rank's weight
        (:func:`~disentangle.train.distributed.shard_rows`; 1 in one process)."""
        if self._ddp is None:
            weight = 1.0
            loss, parts = self.model.loss(_to(batch, self.device), self.step)
            finite = bool(torch.isfinite(loss))
        else:
            shared = getattr(self.model.config, "loss", None) == "softmax"  # DisenGCN's
            batch, weight = distributed.shard_batch(batch, self.rank, self.world, shared)
            loss, parts = self._ddp(_to(batch, self.device), self.step)
            finite = distributed.all_true(bool(torch.isfinite(loss)))
        if not finite:
            raise NonFiniteLoss(f"loss is {loss.item()} at epoch {self.epoch + 1}, step "
                                f"{self.step}; training stopped{self._kept()}")
        self.optimizer.zero_grad(set_to_none=True)
        (loss if self._ddp is None else loss * weight).backward()
        self.optimizer.step()
        self.step += 1
        return loss, parts, weight

    def _train_epoch(self) -> dict[str, Any]:
        self.model.train()
        lr = self.config.lr_at(self.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        if isinstance(self.model, ClosedFormRecommender):  # one solve in place of the batches
            parts = self.model.fit_closed_form(self.split.train)
            return {"epoch": self.epoch + 1, "step": self.step, **parts,
                    "seconds": round(time.perf_counter() - start, 4)}
        totals: dict[str, float] = {}
        n = 0
        total = self.model.num_batches(self.split.train)
        batches = tqdm(self.model.batches(self.split.train, self.generator), leave=False,
                       total=total, desc=f"epoch {self.epoch + 1}", unit="batch",
                       disable=True if total is not None and total <= 1 else self._bars_off(),
                       dynamic_ncols=True)
        for batch in batches:
            loss, parts, weight = self._update(batch)
            n += 1
            share = weight / self.world  # this rank's part of the batch's mean (1 alone)
            for key, value in {"loss": loss.item(), **parts}.items():
                totals[key] = totals.get(key, 0.0) + share * float(value)
        if self.world > 1:  # each batch's values: the row-weighted mean over the ranks
            totals = distributed.sum_over_ranks(totals)
        return {"epoch": self.epoch + 1, "step": self.step, "lr": lr,
                **{k: v / max(n, 1) for k, v in totals.items()},
                "seconds": round(time.perf_counter() - start, 4)}

    def _kept(self) -> str:
        """What a stopped run keeps, for its error message."""
        if self.folder is None or not self.saved_epoch:
            return ""
        return (f"; the checkpoint of epoch {self.saved_epoch} is kept in {self.folder.path} "
                f"(lower train.lr, or check the config, and start a new run)")

    def _check_finite(self, epoch: int) -> None:
        """:class:`NonFiniteModel` if a parameter or buffer holds a NaN or an infinity."""
        bad = non_finite(self.model.state_dict())
        if bad:
            raise NonFiniteModel(f"the model's parameters became NaN or infinite in epoch "
                                 f"{epoch} ({', '.join(bad[:3])}{', ...' * (len(bad) > 3)}); "
                                 f"training stopped and nothing of that epoch was saved"
                                 f"{self._kept()}")

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        return self.evaluate(self.split.valid)

    @torch.no_grad()
    def evaluate(self, eval_set) -> dict[str, Any]:
        self.model.eval()
        return distributed.evaluate(finite_scores(self.model.score), eval_set, self.config.ks,
                                    self.config.eval_chunk, self.device)


def finite_scores(score):
    """``score`` that raises :class:`NonFiniteModel` when a score is NaN or infinite (ranking
    NaN scores still gives a ranking, and metrics that look plausible)."""
    def checked(*args, **kwargs):
        scores = score(*args, **kwargs)
        if not torch.isfinite(scores).all():
            raise NonFiniteModel("the model's scores hold NaN or infinite values; such a model "
                                 "is never evaluated (lower train.lr, or check the config)")
        return scores
    return checked


@contextlib.contextmanager
def _deterministic_kernels(on: bool):
    """Deterministic kernels while training on CPU: without them the backward of an indexed
    read (``index_put_`` with ``accumulate``) adds with atomics in whatever order the threads
    run, and two runs with one seed drift apart in the last bits. Costs ~10% of an epoch."""
    if not on:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@contextlib.contextmanager
def _deferred_interrupt():
    """Hold a Ctrl-C (SIGINT) or a SIGTERM until the block is done, then deliver it: the
    epoch's files are written whole. Off the main thread (where signals cannot be handled)
    this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for sig in dict.fromkeys(received):
        handler = previous[sig]
        if callable(handler) and handler is not signal.default_int_handler:
            handler(sig, None)
        elif sig == signal.SIGINT and handler is not signal.SIG_IGN:
            raise KeyboardInterrupt
        elif sig == signal.SIGTERM and handler == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGTERM)  # the default: end the process, now
