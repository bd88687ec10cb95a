"""The ranking contract every recommender in :mod:`disentangle.models` implements.

The trainer and the ranking evaluation are written once against :class:`Recommender`:
``batches`` / ``num_batches`` / ``loss`` for training, ``score`` for ranking. Baselines
(EASE, ItemKNN, BPR, Mult-VAE/DAE, LightGCN) implement this contract only; disentangled
models add the K-factor contract on top of it
(:class:`~disentangle.models.base.FactorRecommender`), which the factor tools need
(:func:`require_factors` says plainly when a model has none).

Users are always addressed the same way: ``users`` is a ``LongTensor`` of user indices into
the training :class:`~disentangle.data.InteractionData`, and ``history`` is a sparse CSR
``B x M`` float tensor of the items those users are known to have interacted with (the input
of autoencoders and item-based models, the items masked at ranking time for every model).

Models with a closed-form solution (EASE, ItemKNN) subclass :class:`ClosedFormRecommender`:
the trainer calls :meth:`ClosedFormRecommender.fit_closed_form` once in place of gradient
epochs. Their learned matrices are frozen parameters (``requires_grad=False``), so the
optimiser, the checkpoints and the device handling treat every model alike.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from disentangle.data import InteractionData
    from disentangle.models.base import FactorRecommender, ModelConfig


class Recommender(torch.nn.Module, ABC):
    """A model that ranks all items for a user.

    Subclasses set :attr:`name`, :attr:`Config` and :attr:`supports_new_users`, and build
    themselves with ``Model(config, train_data)``.
    """

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]]
    #: Whether the model scores users it did not see in training from ``history`` alone
    #: (needed by the held-out-user protocol).
    supports_new_users: ClassVar[bool]
    #: Run-config values that differ from the global defaults for this model, as
    #: ``{"data": {...}, "train": {...}}`` (e.g. its usual protocol and cut-offs).
    defaults: ClassVar[dict] = {}
    #: Model-config values for keys that a saved run's config lacks because it was written
    #: before the key existed, when the new default would change the saved model.
    saved_run_defaults: ClassVar[dict] = {}

    # -- training -----------------------------------------------------------------------
    @abstractmethod
    def batches(self, train: InteractionData, generator: torch.Generator) -> Iterator[Any]:
        """Yield one epoch of training batches drawn from ``train``."""

    def num_batches(self, train: InteractionData) -> int | None:
        """How many batches :meth:`batches` yields for ``train`` (the progress bar's total),
        or ``None`` when unknown."""
        return None

    @abstractmethod
    def loss(self, batch: Any, step: int) -> tuple[Tensor, dict[str, float]]:
        """Return the scalar training loss of ``batch`` at global update ``step`` and a dict of
        its named parts (floats) for logging."""

    # -- ranking ------------------------------------------------------------------------
    @abstractmethod
    def score(self, users: Tensor, history: Tensor) -> Tensor:
        """``B x M`` preference scores (higher is better) for every item."""


class ClosedFormRecommender(Recommender):
    """A recommender fitted by one computation on the training matrix, not by gradient steps.

    The trainer calls :meth:`fit_closed_form` once instead of running epochs of
    :meth:`batches` / :meth:`loss` (the subclasses' ``defaults`` set ``train.epochs=1``).
    """

    @abstractmethod
    def fit_closed_form(self, train: InteractionData) -> dict[str, float]:
        """Fit on ``train`` (in place, without gradient) and return named values to log."""

    def batches(self, train: InteractionData, generator: torch.Generator) -> Iterator[Any]:
        raise TypeError(f"model {self.name!r} is fitted in closed form: call "
                        f"fit_closed_form(train) instead of training it by batches")

    def num_batches(self, train: InteractionData) -> int:
        return 0

    def loss(self, batch: Any, step: int) -> tuple[Tensor, dict[str, float]]:
        raise TypeError(f"model {self.name!r} is fitted in closed form and has no training "
                        f"loss: call fit_closed_form(train)")


def csr_parts(history: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The CSR pieces ``(crow, col, values)`` of a ``B x M`` ``history`` (sparse CSR, COO or
    dense) on ``like``'s device, indices as ``int64`` and values in ``like``'s dtype: how the
    autoencoders read their input rows without a dense ``B x M`` copy."""
    history = history.to(like.device)
    if history.layout == torch.sparse_coo:
        history = history.coalesce().to_sparse_csr()
    elif history.layout == torch.strided:
        history = history.to_sparse_csr()
    elif history.layout != torch.sparse_csr:
        raise ValueError(f"history layout {history.layout} is not supported")
    return (history.crow_indices().long(), history.col_indices().long(),
            history.values().to(like.dtype))


def user_row_batches(train: InteractionData, batch_size: int, generator: torch.Generator
                     ) -> Iterator[Tensor]:
    """One epoch of an autoencoder: the users with at least one interaction, shuffled with
    ``generator``, as sparse CSR ``batch_size x M`` float rows of ``train``."""
    csr = train.csr
    active = torch.from_numpy(np.flatnonzero(np.diff(csr.indptr)))
    order = active[torch.randperm(active.numel(), generator=generator)]
    for chunk in order.split(batch_size):
        rows = csr[chunk.numpy()]
        yield torch.sparse_csr_tensor(
            torch.from_numpy(rows.indptr).long(), torch.from_numpy(rows.indices).long(),
            torch.from_numpy(rows.data).float(), size=rows.shape,
            check_invariants=False)  # scipy built it: valid by construction


class NoFactorsError(ValueError):
    """A factor tool was given a model without factors (a ranking-only baseline)."""


def require_factors(model: Recommender, tool: str) -> FactorRecommender:
    """Return ``model`` if it implements the K-factor contract, else raise
    :class:`NoFactorsError` with one line naming the model and the ``tool`` that needs it."""
    from disentangle.models.base import FactorRecommender

    if not isinstance(model, FactorRecommender):
        raise NoFactorsError(f"{tool} needs a disentangled model; {model.name!r} is a "
                             f"ranking-only baseline and has no factors")
    return model
