"""BPR: matrix factorisation trained with Bayesian personalised ranking."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import Tensor
from torch_geometric.nn.models.lightgcn import BPRLoss

from disentangle.data import InteractionData
from disentangle.data.negatives import reject_positives
from disentangle.models.base import ModelConfig
from disentangle.models.recommender import Recommender

#: Run defaults of the pairwise (transductive) baselines: they cannot score held-out users,
#: and are compared at k=20 with recall = hits / |test| (LightGCN, DGCF).
PAIRWISE_DEFAULTS = {"data": {"protocol": "ratio"},
                     "train": {"ks": [20, 50], "select": "recall@20"}}


def pair_batches(train: InteractionData, batch_size: int, generator: torch.Generator
                 ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """One epoch of ``(users, positive items, negative items)``: every training pair once, in
    random order, each with one item drawn uniformly among those the user has not interacted
    with in ``train``."""
    users = torch.as_tensor(train.users, dtype=torch.long)
    items = torch.as_tensor(train.items, dtype=torch.long)
    order = torch.randperm(len(users), generator=generator)
    users, items = users[order], items[order]
    negatives = torch.randint(train.num_items, (len(users),), generator=generator)
    reject_positives(users, negatives, items, train.num_items, generator)
    yield from zip(users.split(batch_size), items.split(batch_size),
                   negatives.split(batch_size))


@dataclasses.dataclass
class BPRConfig(ModelConfig):
    """Hyperparameters of :class:`BPR`.

    Args:
        dim (int): embedding dimension :math:`d`. (default: ``64``)
        reg (float): L2 weight :math:`\\lambda` on the batch's embeddings. (default: ``1e-4``)
        batch_size (int): training pairs per update. (default: ``2048``)
    """

    dim: int = 64
    reg: float = 1e-4
    batch_size: int = 2048

    def validate(self) -> None:
        self.check("dim", self.dim, self.dim >= 1, "an integer >= 1")
        self.check("reg", self.reg, self.reg >= 0, "a float >= 0")
        self.check("batch_size", self.batch_size, self.batch_size >= 1, "an integer >= 1")


class BPR(Recommender):
    r"""Matrix factorisation trained with the pairwise loss of `"BPR: Bayesian Personalized
    Ranking from Implicit Feedback" <https://arxiv.org/abs/1205.2618>`_ (Rendle et al., UAI
    2009).

    A user :math:`u` and an item :math:`i` have free vectors :math:`\mathbf{p}_u,
    \mathbf{q}_i \in \mathbb{R}^d` and the score :math:`\hat{y}_{ui} = \mathbf{p}_u^\top
    \mathbf{q}_i`. For a batch :math:`\mathcal{B}` of training pairs :math:`(u, i)`, each
    with one item :math:`j` drawn uniformly among those :math:`u` has not interacted with,
    the loss is PyG's :class:`~torch_geometric.nn.models.lightgcn.BPRLoss`:

    .. math::
        \mathcal{L} = -\frac{1}{|\mathcal{B}|} \sum_{(u,i,j) \in \mathcal{B}}
            \ln \sigma(\hat{y}_{ui} - \hat{y}_{uj})
            + \frac{\lambda}{|\mathcal{B}|} \sum_{(u,i,j) \in \mathcal{B}}
            \big(\|\mathbf{p}_u\|^2 + \|\mathbf{q}_i\|^2 + \|\mathbf{q}_j\|^2\big).

    Args:
        config (BPRConfig): the hyperparameters (validated here).
        train_data (InteractionData): the training interactions; fixes the numbers of users
            and items.
    """

    name = "bpr"
    Config = BPRConfig
    supports_new_users = False
    defaults: ClassVar[dict] = PAIRWISE_DEFAULTS

    def __init__(self, config: BPRConfig, train_data: InteractionData) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.num_users = int(train_data.num_users)
        self.num_items = int(train_data.num_items)
        self.user_embedding = torch.nn.Embedding(self.num_users, config.dim)
        self.item_embedding = torch.nn.Embedding(self.num_items, config.dim)
        self.criterion = BPRLoss(config.reg)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform embeddings (as PyG's LightGCN)."""
        torch.nn.init.xavier_uniform_(self.user_embedding.weight)
        torch.nn.init.xavier_uniform_(self.item_embedding.weight)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_users={self.num_users}, "
                f"num_items={self.num_items}, dim={self.config.dim})")

    def batches(self, train: InteractionData, generator: torch.Generator
                ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """See :func:`pair_batches`."""
        return pair_batches(train, self.config.batch_size, generator)

    def num_batches(self, train: InteractionData) -> int:
        return math.ceil(train.num_interactions / self.config.batch_size)

    def loss(self, batch: tuple[Tensor, Tensor, Tensor], step: int
             ) -> tuple[Tensor, dict[str, float]]:
        """BPR loss of ``(users, positives, negatives)`` with the L2 term."""
        users, pos, neg = batch
        p, q_pos, q_neg = (self.user_embedding(users), self.item_embedding(pos),
                           self.item_embedding(neg))
        loss = self.criterion((p * q_pos).sum(-1), (p * q_neg).sum(-1),
                              torch.cat([p, q_pos, q_neg]))
        return loss, {}

    def score(self, users: Tensor, history: Tensor) -> Tensor:
        """``B x M`` inner products :math:`\\mathbf{p}_u^\\top \\mathbf{q}_i` (``history`` is
        not used)."""
        return self.user_embedding(users) @ self.item_embedding.weight.T
