"""EASE: a shallow linear item-item autoencoder with a closed-form solution."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from disentangle.data import InteractionData
from disentangle.models.base import ModelConfig
from disentangle.models.recommender import ClosedFormRecommender


@dataclasses.dataclass
class EASEConfig(ModelConfig):
    """Hyperparameters of :class:`EASE`.

    Args:
        lam (float): L2 weight :math:`\\lambda` on :math:`\\mathbf{B}`. The default was chosen
            on the validation users of ml-latest-small (held-out protocol) over
            ``{50, 100, 200, 300, 500, 1000}``; Steck uses 500 on ML-20M, whose item counts
            are about a hundred times larger. (default: ``200.0``)
    """

    lam: float = 200.0

    def validate(self) -> None:
        self.check("lam", self.lam, self.lam > 0, "a float > 0")


class EASE(ClosedFormRecommender):
    r"""The EASE model from the `"Embarrassingly Shallow Autoencoders for Sparse Data"
    <https://arxiv.org/abs/1905.03375>`_ paper (Steck, WWW 2019).

    An item-item weight matrix :math:`\mathbf{B} \in \mathbb{R}^{M \times M}` reconstructs the
    binary user-item matrix :math:`\mathbf{X}` from itself, with a zero diagonal so that no
    item predicts itself:

    .. math::
        \min_{\mathbf{B}} \|\mathbf{X} - \mathbf{X}\mathbf{B}\|_F^2
            + \lambda \|\mathbf{B}\|_F^2
        \quad \text{s.t.} \quad \operatorname{diag}(\mathbf{B}) = \mathbf{0}.

    Its solution, with :math:`\mathbf{P} = (\mathbf{X}^\top\mathbf{X} + \lambda\mathbf{I})^{-1}`:

    .. math::
        \mathbf{B} = \mathbf{I} - \mathbf{P}\,\operatorname{diagMat}\big(\mathbf{1} \oslash
            \operatorname{diag}(\mathbf{P})\big), \quad\text{i.e.}\quad
        B_{ij} = -P_{ij} / P_{jj} \ (i \ne j), \quad B_{jj} = 0.

    A user's scores are :math:`\mathbf{x}_u \mathbf{B}`, so any history can be scored (new
    users included). With fewer users :math:`N` than items, :math:`\mathbf{P}` comes from the
    Woodbury identity, which solves an :math:`N \times N` system instead of an
    :math:`M \times M` one:

    .. math::
        \mathbf{P} = \tfrac{1}{\lambda}\big(\mathbf{I} - \mathbf{Q}\big), \quad
        \mathbf{Q} = \mathbf{X}^\top(\mathbf{X}\mathbf{X}^\top + \lambda\mathbf{I})^{-1}
            \mathbf{X}, \quad\text{so}\quad
        B_{ij} = Q_{ij} / (1 - Q_{jj}) \ (i \ne j).

    Both solves run in float64; :math:`\mathbf{B}` is kept in float32. Memory grows as
    :math:`M^2` (the dense :math:`\mathbf{B}`, in the model and in each checkpoint, plus
    float64 temporaries of that order), as in the paper: catalogues up to a few tens of
    thousands of items.

    Args:
        config (EASEConfig): the hyperparameters (validated here).
        train_data (InteractionData): the training interactions; fixes the number of items.
    """

    name = "ease"
    Config = EASEConfig
    supports_new_users = True
    defaults: ClassVar[dict] = {"train": {"epochs": 1}}

    def __init__(self, config: EASEConfig, train_data: InteractionData) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.num_items = int(train_data.num_items)
        self.weight = torch.nn.Parameter(torch.zeros(self.num_items, self.num_items),
                                         requires_grad=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_items={self.num_items}, lam={self.config.lam})"

    @torch.no_grad()
    def fit_closed_form(self, train: InteractionData) -> dict[str, float]:
        """Solve for :math:`\\mathbf{B}` on ``train`` (the path with the smaller system)."""
        if train.num_items != self.num_items:
            raise ValueError(f"train has {train.num_items} items, the model {self.num_items}")
        x = train.csr.astype(np.float64)
        lam, m = self.config.lam, self.num_items
        if x.shape[0] < m:
            gram = torch.from_numpy((x @ x.T).toarray())                  # N x N
            gram.diagonal().add_(lam)
            # K X through a Cholesky solve, then Q = X^T (K X): sparse times dense.
            kx = torch.cholesky_solve(torch.from_numpy(x.toarray()), torch.linalg.cholesky(gram))
            q = torch.from_numpy(np.asarray(x.T @ kx.numpy()))            # M x M
            b = q / (1 - q.diagonal())[None, :]
        else:
            gram = torch.from_numpy((x.T @ x).toarray())                  # M x M
            gram.diagonal().add_(lam)
            p = torch.cholesky_inverse(torch.linalg.cholesky(gram))
            b = -p / p.diagonal()[None, :]
        b.diagonal().zero_()
        self.weight.copy_(b)
        return {}

    def score(self, users: Tensor, history: Tensor) -> Tensor:
        """``B x M`` scores :math:`\\mathbf{x}_u \\mathbf{B}` (``users`` is ignored)."""
        history = history.to(device=self.weight.device, dtype=self.weight.dtype)
        return history @ self.weight
