"""The K-factor contract every recommender in :mod:`disentangle.models` implements.

The trainer, the ranking evaluation, the factor metrics, the plots and the explanations are
written once against this interface (DESIGN.md, "The K-factor contract").

Users are always addressed the same way: ``users`` is a ``LongTensor`` of user indices into
the training :class:`~disentangle.data.InteractionData`, and ``history`` is a sparse CSR
``B x M`` float tensor of the items those users are known to have interacted with (the model's
input for autoencoders, the items masked at ranking time for every model). Autoencoders such
as MacridVAE read ``history`` and ignore ``users`` (so they serve held-out users); graph
models such as DisenGCN read ``users`` and ignore ``history``.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor


@dataclasses.dataclass
class ModelConfig:
    """Base of every model's hyperparameter dataclass.

    Subclasses declare their fields with paper defaults and override :meth:`validate`, which
    raises :class:`ValueError` naming the field, the value and what is accepted.
    """

    def validate(self) -> None:
        """Raise ``ValueError`` for an out-of-range field."""

    @staticmethod
    def check(name: str, value: Any, ok: bool, accepted: str) -> None:
        """Raise a one-line ``ValueError`` unless ``ok``."""
        if not ok:
            raise ValueError(f"{name}={value!r} is out of range: expected {accepted}")


class FactorRecommender(torch.nn.Module, ABC):
    """A recommender whose representations are split into ``K`` factors.

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

    num_factors: int

    # -- training -----------------------------------------------------------------------
    @abstractmethod
    def batches(self, train, generator: torch.Generator) -> Iterator[Any]:
        """Yield one epoch of training batches drawn from ``train`` (an InteractionData)."""

    def num_batches(self, train) -> int | None:
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

    # -- K-factor contract --------------------------------------------------------------
    @abstractmethod
    def item_factor_weights(self) -> Tensor:
        """``M x K``; each row a distribution over factors."""

    @abstractmethod
    def user_factor_weights(self, users: Tensor, history: Tensor) -> Tensor:
        """``B x K``; each row a distribution: how much each factor drives the user."""

    @abstractmethod
    def factor_embeddings(self, users: Tensor, history: Tensor) -> Tensor:
        """``B x K x d`` user representations, one ``d``-vector per factor."""

    @abstractmethod
    def item_factor_embeddings(self) -> Tensor:
        """``M x K x d`` item representations, one ``d``-vector per factor."""

    @abstractmethod
    def explain(self, users: Tensor, history: Tensor, items: Tensor) -> Tensor:
        """``B x N x K``: for user ``b`` and item ``items[b, n]``, the share of the score that
        each factor contributes (rows sum to one; a score term that belongs to no factor,
        such as an item bias, is left out)."""
