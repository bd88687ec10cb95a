r"""Data-parallel training with :mod:`torch.distributed`: the plumbing the trainer and the run
use when the process is one of several that ``torchrun`` started.

``torchrun --nproc_per_node=N -m disentangle_cli.main fit ...`` starts ``N`` processes with
``RANK``, ``WORLD_SIZE`` and ``MASTER_ADDR`` set; :func:`process_group` joins them (gloo on
the CPU, NCCL on GPUs; one GPU per process) and does nothing in a plain process, so a
single-process run never touches this module's collectives.

**Same random draws, split rows.** Every rank draws the same global batch from the batch
generator (seeded by ``train.seed``, saved in checkpoints) and keeps a contiguous share of
its rows (:func:`shard_batch`): users for the autoencoders, edges for the graph models and
BPR. With :math:`N` rows in the global batch and :math:`n_r` on rank :math:`r`, rank
:math:`r` scales its loss by :math:`w_r = n_r W / N` before
:class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients over the
:math:`W` ranks, so the update is that of the whole batch,

.. math::
    \frac{1}{W} \sum_r w_r \nabla \ell_r = \sum_r \frac{n_r}{N} \nabla \ell_r
    = \nabla \frac{1}{N} \sum_{u \in \mathcal{B}} \ell_u,

for every loss that is a mean over the batch's rows plus terms that do not depend on them
(the L2 penalties). A single-process run with the same config therefore takes the same steps,
up to the order of floating-point sums. What is not a row mean differs, with the same
expectation: DisenGCN's correlation penalty is estimated on each rank's rows, and draws from
torch's own generator (dropout, Gumbel and reparameterisation noise) come from one stream per
rank (rank 0's is the single process's stream).

**Evaluation** is sharded over users: each rank ranks a contiguous share of the evaluation
users with the whole model and the per-rank means are combined weighted by user counts, so
all ranks hold the same metrics (and take the same early-stopping decision).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ..data.splits import EvalSet
from ..metrics.ranking import evaluate as evaluate_all

__all__ = [
    "LossModule",
    "all_true",
    "evaluate",
    "gather_tensors",
    "launched_world_size",
    "process_group",
    "rank",
    "shard_batch",
    "shard_rows",
    "sum_over_ranks",
    "world_size",
]


def launched_world_size() -> int:
    """``WORLD_SIZE`` as ``torchrun`` set it (1 in a plain process)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def world_size() -> int:
    """Processes in the joined group (1 outside :func:`process_group`)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the joined group, else ``RANK`` as ``torchrun`` set it, and 0
    in a plain process (``WORLD_SIZE`` unset or 1): rank 0 alone writes and prints."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched_world_size() > 1 else 0


@contextlib.contextmanager
def process_group(device: str | torch.device) -> Iterator[torch.device]:
    """Join the group ``torchrun`` started (when ``WORLD_SIZE > 1``) for the block and yield
    this process's device: ``cuda:LOCAL_RANK`` for a CUDA run, else ``device``. A plain
    process (or a group joined already) yields ``device`` and joins nothing."""
    device = torch.device(device)
    if launched_world_size() <= 1 or dist.is_initialized():
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            timeout=timedelta(minutes=30),
                            device_id=device if device.type == "cuda" else None)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


# -- batches ----------------------------------------------------------------------------------
def shard_rows(n: int, part: int, parts: int) -> tuple[slice, float]:
    """Rank ``part``'s contiguous rows of an ``n``-row batch (sizes differ by at most one)
    and its loss weight :math:`n_r W / N`. A rank left without rows (``n < parts``) gets row
    0 with weight 0: it still takes part in the gradient average, adding nothing."""
    start, stop = part * n // parts, (part + 1) * n // parts
    if stop == start:
        return slice(0, 1), 0.0
    return slice(start, stop), (stop - start) * parts / n


def _csr_rows(batch: Tensor, rows: slice) -> Tensor:
    crow = batch.crow_indices()
    lo, hi = int(crow[rows.start]), int(crow[rows.stop])
    return torch.sparse_csr_tensor(crow[rows.start:rows.stop + 1] - lo,
                                   batch.col_indices()[lo:hi], batch.values()[lo:hi],
                                   size=(rows.stop - rows.start, batch.shape[1]),
                                   check_invariants=False)


def shard_batch(batch: Any, part: int, parts: int, shared_negatives: bool = False
                ) -> tuple[Any, float]:
    """Rank ``part``'s share of a global training batch, and its loss weight
    (:func:`shard_rows`).

    The batches of :meth:`~disentangle.models.recommender.Recommender.batches`: sparse CSR
    user rows (the autoencoders), or ``(users, positives, negatives)`` edges with, for a
    sampled graph, ``(nodes, blocks, index)`` after them (``index`` locates the users,
    positives and negatives among ``nodes``; the sampled graph is kept whole). With
    ``shared_negatives`` (DisenGCN's sampled softmax) the negatives belong to every row and
    are kept whole too.
    """
    if isinstance(batch, Tensor):
        rows, weight = shard_rows(batch.shape[0], part, parts)
        return (_csr_rows(batch, rows) if batch.layout == torch.sparse_csr else batch[rows]), \
            weight
    users, pos, neg, *graph = batch
    rows, weight = shard_rows(len(users), part, parts)
    local = [users[rows], pos[rows], neg if shared_negatives else neg[rows]]
    if graph:
        nodes, blocks, index = graph
        iu, ip, ineg = index.split([len(users), len(pos), len(neg)])
        local += [nodes, blocks, torch.cat([iu[rows], ip[rows],
                                            ineg if shared_negatives else ineg[rows]])]
    return type(batch)(local), weight


class LossModule(torch.nn.Module):
    """``model.loss`` as a module's forward, the call
    :class:`~torch.nn.parallel.DistributedDataParallel` wraps (it syncs gradients of what its
    forward computed)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any, step: int) -> tuple[Tensor, dict[str, float]]:
        return self.model.loss(batch, step)


# -- collectives ------------------------------------------------------------------------------
def _on_backend(t: Tensor) -> Tensor:
    """``t`` where the group's backend reduces it: NCCL only reduces CUDA tensors."""
    if dist.get_backend() == "nccl":
        return t.to(torch.device("cuda", torch.cuda.current_device()))
    return t


def sum_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value summed over the ranks (float64; the same keys, in the same order, on every
    rank)."""
    keys = list(values)
    t = _on_backend(torch.tensor([values[k] for k in keys], dtype=torch.float64))
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank."""
    t = _on_backend(torch.tensor([int(flag)]))
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def gather_tensors(t: Tensor) -> list[Tensor]:
    """``t`` of every rank, in rank order, on every rank (same shape on every rank), on
    ``t``'s device."""
    moved = _on_backend(t)
    out = [torch.empty_like(moved) for _ in range(world_size())]
    dist.all_gather(out, moved)
    return [o.to(t.device) for o in out]


# -- evaluation -------------------------------------------------------------------------------
def evaluate(score: Callable, eval_set: EvalSet, ks, chunk_size: int,
             device: str | torch.device) -> dict[str, Any]:
    """:func:`~disentangle.metrics.ranking.evaluate`, sharded over the group's ranks: every
    rank evaluates a contiguous share of the users and every rank returns the user-weighted
    mean of the shares. An error on one rank (a non-finite score) is raised on all."""
    n, parts = len(eval_set), world_size()
    if parts == 1:
        return evaluate_all(score, eval_set, ks, chunk_size, device)
    start, stop = rank() * n // parts, (rank() + 1) * n // parts
    part = EvalSet(eval_set.users[start:stop], eval_set.history[start:stop],
                   eval_set.target[start:stop])
    try:
        mine: Any = (stop - start, evaluate_all(score, part, ks, chunk_size, device)
                     if stop > start else {})
    except Exception as e:  # noqa: BLE001 -- re-raised below, on every rank
        mine = e
    shares: list[Any] = [None] * parts
    dist.all_gather_object(shares, mine)
    for share in shares:
        if isinstance(share, Exception):
            raise share
    first = next((r for m, r in shares if m), {})
    names = [k for k in first if k not in ("users", "users_without_target")]
    result = {k: float(np.sum([m * r[k] for m, r in shares if m]) / max(n, 1)) for k in names}
    result["users"] = n
    result["users_without_target"] = eval_set.num_without_target
    return result
