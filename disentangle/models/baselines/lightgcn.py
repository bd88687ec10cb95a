"""LightGCN on the user–item graph, through PyG's own model and loss."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import Tensor
from torch_geometric.nn.models import LightGCN as PyGLightGCN

from disentangle.data import InteractionData
from disentangle.models.base import ModelConfig
from disentangle.models.baselines.bpr import PAIRWISE_DEFAULTS, pair_batches
from disentangle.models.recommender import Recommender


@dataclasses.dataclass
class LightGCNConfig(ModelConfig):
    """Hyperparameters of :class:`LightGCN`; the defaults are the paper's.

    Args:
        dim (int): embedding dimension :math:`d`. (default: ``64``)
        num_layers (int): propagation layers :math:`L`. (default: ``3``)
        reg (float): L2 weight :math:`\\lambda` of ``recommendation_loss`` on the ego
            embeddings of the batch's nodes. (default: ``1e-4``)
        batch_size (int): training pairs per update. (default: ``2048``)
    """

    dim: int = 64
    num_layers: int = 3
    reg: float = 1e-4
    batch_size: int = 2048

    def validate(self) -> None:
        self.check("dim", self.dim, self.dim >= 1, "an integer >= 1")
        self.check("num_layers", self.num_layers, self.num_layers >= 0, "an integer >= 0")
        self.check("reg", self.reg, self.reg >= 0, "a float >= 0")
        self.check("batch_size", self.batch_size, self.batch_size >= 1, "an integer >= 1")


class LightGCN(Recommender):
    r"""The LightGCN model from the `"LightGCN: Simplifying and Powering Graph Convolution
    Network for Recommendation" <https://arxiv.org/abs/2002.02126>`_ paper (He et al., SIGIR
    2020), as PyG's :class:`torch_geometric.nn.models.LightGCN` on the user–item graph.

    Users are nodes :math:`0..N-1` and items :math:`N..N+M-1` of one undirected graph holding
    every training pair in both directions. Ego embeddings :math:`\mathbf{e}^{(0)}` are
    propagated without weights or non-linearities and the layers averaged:

    .. math::
        \mathbf{e}^{(l+1)}_v = \sum_{w \in \mathcal{N}(v)}
            \frac{\mathbf{e}^{(l)}_w}{\sqrt{|\mathcal{N}(v)|\,|\mathcal{N}(w)|}}, \qquad
        \mathbf{e}_v = \frac{1}{L+1} \sum_{l=0}^{L} \mathbf{e}^{(l)}_v, \qquad
        \hat{y}_{ui} = \mathbf{e}_u^\top \mathbf{e}_i.

    Each update propagates the whole graph and takes PyG's ``recommendation_loss`` of a batch
    :math:`\mathcal{B}` of pairs :math:`(u, i)` with one uniformly drawn non-interacted item
    :math:`j` each, whose L2 term covers the ego embeddings of the distinct nodes
    :math:`V_\mathcal{B}` of the batch:

    .. math::
        \mathcal{L} = -\frac{1}{|\mathcal{B}|} \sum_{(u,i,j) \in \mathcal{B}}
            \ln \sigma(\hat{y}_{ui} - \hat{y}_{uj})
            + \frac{\lambda}{|\mathcal{B}|} \sum_{v \in V_\mathcal{B}} \|\mathbf{e}^{(0)}_v\|^2.

    Args:
        config (LightGCNConfig): the hyperparameters (validated here).
        train_data (InteractionData): the training interactions: the graph that is propagated.
    """

    name = "lightgcn"
    Config = LightGCNConfig
    supports_new_users = False
    defaults: ClassVar[dict] = PAIRWISE_DEFAULTS

    def __init__(self, config: LightGCNConfig, train_data: InteractionData) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.num_users = n = int(train_data.num_users)
        self.num_items = int(train_data.num_items)
        self.model = PyGLightGCN(n + self.num_items, config.dim, config.num_layers)
        users, items = train_data.edge_index
        self.register_buffer("edge_index", torch.stack([torch.cat([users, items + n]),
                                                        torch.cat([items + n, users])]),
                             persistent=False)  # rebuilt from the training data on load
        self._cache: tuple[tuple, Tensor] | None = None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_users={self.num_users}, "
                f"num_items={self.num_items}, dim={self.config.dim}, "
                f"num_layers={self.config.num_layers})")

    def embeddings(self) -> Tensor:
        """``(N + M) x d`` final embeddings :math:`\\mathbf{e}_v` (users first); without
        gradient they are reused until the parameters change."""
        if torch.is_grad_enabled():
            return self.model.get_embedding(self.edge_index)
        weight = self.model.embedding.weight
        key = (weight._version, weight.data_ptr(), weight.device)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.model.get_embedding(self.edge_index))
        return self._cache[1]

    def batches(self, train: InteractionData, generator: torch.Generator
                ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """See :func:`~disentangle.models.baselines.bpr.pair_batches`."""
        if (train.num_users, train.num_items) != (self.num_users, self.num_items):
            raise ValueError(f"train has {train.num_users} users and {train.num_items} items, "
                             f"the model {self.num_users} and {self.num_items}")
        return pair_batches(train, self.config.batch_size, generator)

    def num_batches(self, train: InteractionData) -> int:
        return math.ceil(train.num_interactions / self.config.batch_size)

    def loss(self, batch: tuple[Tensor, Tensor, Tensor], step: int
             ) -> tuple[Tensor, dict[str, float]]:
        """PyG's ``recommendation_loss`` of ``(users, positives, negatives)``."""
        users, pos, neg = batch
        pos, neg = pos + self.num_users, neg + self.num_users
        pairs = torch.stack([torch.cat([users, users]), torch.cat([pos, neg])])
        rank_pos, rank_neg = self.model(self.edge_index, pairs).chunk(2)
        nodes = torch.cat([users, pos, neg]).unique()
        loss = self.model.recommendation_loss(rank_pos, rank_neg, node_id=nodes,
                                              lambda_reg=self.config.reg)
        return loss, {}

    def score(self, users: Tensor, history: Tensor) -> Tensor:
        """``B x M`` inner products :math:`\\mathbf{e}_u^\\top \\mathbf{e}_i` (``history`` is
        not used)."""
        out = self.embeddings()
        return out[users] @ out[self.num_users:].T
