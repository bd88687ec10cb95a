"""DisenGCN on the user–item graph: free K-factor embeddings refined by neighbourhood routing.

The layer is DisenGCN's (Ma et al., ICML 2019, :class:`~disentangle.nn.disen_conv.DisenConv`)
with DGCF's linear output; the recommender around it follows DGCF (Wang et al., SIGIR 2020,
"Disentangled Graph Collaborative Filtering"): free user and item embeddings split into ``K``
channels, routing over the bipartite graph in both directions, inner-product scores, BPR
with L2 on the batch's embeddings and DGCF's distance-correlation penalty between channels.
The sizes are DGCF's gowalla setting (4 factors of 16 dimensions, one layer, two routing
iterations, L2 weight 1e-3, correlation weight 0.01); two defaults differ from the papers
so that the routing decides something (channels started on the graph's spectral clusters,
routing temperature 0.05; see :class:`DisenGCN`), and ``configs/disengcn-paper.yaml``
restores the papers' choices. By
default every update propagates the whole graph, which costs about the same for 2000 or
8192 edges, so on a CPU larger batches make more progress per second (4x fewer updates per
epoch; raise the learning rate with them, e.g. Adam 5e-3 rather than DGCF's 1e-3). With
``neighbors=S`` an update routes only on the sampled neighbourhood of its batch (DisenGCN's
own mini-batch training), which makes small batches cheap; ``benchmarks/disengcn_updates.py``
measures both.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import scatter

from disentangle.data import InteractionData
from disentangle.data.negatives import reject_positives
from disentangle.data.neighbors import incoming_csr, sample_blocks
from disentangle.models.base import MAX_WIDTH, FactorRecommender, ModelConfig
from disentangle.models.factor_init import spectral_factors
from disentangle.nn.disen_conv import DisenConv

_COMBINE = ("mean", "last")
_LOSSES = ("bpr", "softmax")
_INITS = ("spectral", "normal")
_NORMS = ("node", "channel")
_SCORES = ("dot", "cosine")


@dataclasses.dataclass
class DisenGCNConfig(ModelConfig):
    r"""Hyperparameters of :class:`DisenGCN`.

    Attributes:
        num_factors: ``K``, channels per user and item.
        factor_dim: ``d``, dimensions per channel (the embedding has ``K * d``).
        num_layers: ``L``, stacked :class:`DisenConv` layers.
        iterations: ``T``, routing iterations per layer.
        tau: softmax temperature of the routing. The routing scores are cosines in
            ``[-1, 1]``, so at ``tau = 1`` no edge can commit to a factor (with ``K = 4`` the
            largest possible weight is 0.711); at ``0.05`` a cosine lead of 0.1 is a factor
            ``e^2`` in weight. DGCF and DisenGCN use 1.
        routing_norm: ``"node"``: the routing reads a node's ``K`` channels scaled to unit
            length together, so a channel's score is its cosine times its share of the node's
            norm; ``"channel"``: every channel scaled to unit length on its own (DisenGCN's),
            so a channel the node barely uses attracts edges by its direction alone (see
            :class:`~disentangle.nn.disen_conv.DisenConv`).
        dropout: message dropout of the final aggregation of every layer.
        layer_combine: ``"mean"``: the mean of the ego embedding and the ``L`` layer
            outputs, as DGCF and LightGCN combine layers (the ego term trains every channel
            of every node on every interaction, which ranks best but blurs the factors);
            ``"last"``: the output of layer ``L``, so a node's free embedding reaches the
            scores only through the routed sums, in the channels its edges are routed to
            (it keeps planted clusters, but ranks ~8% lower on ml-latest-small; see
            ``docs/results.md``).
        init: ``"spectral"``: the channels start on the clusters of the training graph
            (:meth:`DisenGCN.reset_parameters`: spectral item vectors, spherical k-means into
            ``K`` clusters, item ``i`` of cluster ``k`` starts with its vector in channel
            ``k``, users with the mixture of their history); ``"normal"``: every entry
            :math:`\mathcal{N}(0, 0.1^2)`, as LightGCN.
        batch_size: training edges (positive pairs) per update (DGCF: 2000; see the module
            docstring).
        neighbors: ``0``: every update propagates the whole graph; ``S > 0``: every update
            routes on the computation graph of the batch's users and items only, with at most
            ``S`` neighbours per node and layer, drawn uniformly with replacement where a node
            has more (DisenGCN's ``nbsz``). Evaluation always uses the whole graph.
        loss: ``"bpr"``: one uniformly drawn negative per edge; ``"softmax"``: sampled
            softmax, every edge of a batch against ``num_negatives`` items drawn uniformly
            once per batch.
        num_negatives: negatives shared by a batch (``loss="softmax"`` only).
        softmax_tau: temperature of the sampled softmax (``loss="softmax"`` only).
        score: ``"dot"``: a user–item score is the inner product of the final
            representations; ``"cosine"``: every final representation is scaled to unit
            length first (all ``K`` channels together), so scores are cosine similarities,
            as in SSM and SimpleX. It needs ``loss="softmax"``, whose ``softmax_tau`` sets
            the scale of the scores. Scores then ignore the embeddings' norms (the
            propagation is linear and the routing reads directions), so ``reg_weight`` no
            longer limits them; it only keeps the norms small, which keeps Adam's angular
            steps large.
        item_bias: add a learned bias :math:`b_i` (zero at first, outside ``reg_weight``'s
            penalty) to every score of item ``i``. Unit-length representations cannot rank
            popular items higher by their norms, as inner products do; the bias gives
            popularity its own term. It is not part of any factor: :meth:`DisenGCN.explain`
            splits the inner product.
        reg_weight: weight of the L2 penalty ``0.5 * ||ego rows of the batch||^2 / B``.
        cor_weight: weight of the distance correlation between channels, summed over the
            ``K - 1`` adjacent pairs ``(k, k+1)`` as DGCF defines it (0 disables it).
        cor_sample: the first ``cor_sample`` users and positive items of each batch (batches
            are shuffled, so a random sample) on which the distance correlation is computed.
        reject_positives: resample negatives that are training positives of the user
            (``loss="bpr"``; the sampled softmax only leaves out each row's own positive).
    """

    num_factors: int = 4
    factor_dim: int = 16
    num_layers: int = 1
    iterations: int = 2
    tau: float = 0.05
    routing_norm: str = "node"
    dropout: float = 0.0
    layer_combine: str = "mean"
    init: str = "spectral"
    batch_size: int = 8192
    neighbors: int = 0
    loss: str = "bpr"
    num_negatives: int = 1024
    softmax_tau: float = 1.0
    score: str = "dot"
    item_bias: bool = False
    reg_weight: float = 1e-3
    cor_weight: float = 0.01
    cor_sample: int = 256
    reject_positives: bool = True

    def validate(self) -> None:
        self.check("num_factors", self.num_factors, self.num_factors >= 1, "an integer >= 1")
        self.check("factor_dim", self.factor_dim, self.factor_dim >= 1, "an integer >= 1")
        self.check("num_factors", self.num_factors,
                   self.num_factors * self.factor_dim <= MAX_WIDTH,
                   f"num_factors * factor_dim <= {MAX_WIDTH} (every node holds that many values)")
        self.check("num_layers", self.num_layers, self.num_layers >= 1, "an integer >= 1")
        self.check("iterations", self.iterations, self.iterations >= 1, "an integer >= 1")
        self.check("tau", self.tau, self.tau > 0, "a float > 0")
        self.check("routing_norm", self.routing_norm, self.routing_norm in _NORMS,
                   f"one of {_NORMS}")
        self.check("dropout", self.dropout, 0.0 <= self.dropout < 1.0, "a float in [0, 1)")
        self.check("layer_combine", self.layer_combine, self.layer_combine in _COMBINE,
                   f"one of {_COMBINE}")
        self.check("init", self.init, self.init in _INITS, f"one of {_INITS}")
        self.check("batch_size", self.batch_size, self.batch_size >= 1, "an integer >= 1")
        self.check("neighbors", self.neighbors, self.neighbors >= 0, "an integer >= 0")
        self.check("loss", self.loss, self.loss in _LOSSES, f"one of {_LOSSES}")
        self.check("num_negatives", self.num_negatives, self.num_negatives >= 1,
                   "an integer >= 1")
        self.check("softmax_tau", self.softmax_tau, self.softmax_tau > 0, "a float > 0")
        self.check("score", self.score, self.score in _SCORES, f"one of {_SCORES}")
        self.check("score", self.score, self.score == "dot" or self.loss == "softmax",
                   "'dot' with loss='bpr' (cosine scores need the softmax's temperature)")
        self.check("reg_weight", self.reg_weight, self.reg_weight >= 0, "a float >= 0")
        self.check("cor_weight", self.cor_weight, self.cor_weight >= 0, "a float >= 0")
        self.check("cor_sample", self.cor_sample, self.cor_sample >= 2, "an integer >= 2")


class DisenGCN(FactorRecommender):
    r"""DisenGCN routing over the user–item graph, trained with BPR (or a sampled softmax).

    Users and items get free embeddings :math:`\mathbf{e}` of ``K`` channels of ``d``
    dimensions. Each of the ``L`` :class:`~disentangle.nn.disen_conv.DisenConv` layers routes
    over both edge directions of the interaction graph (users aggregate their items, items
    their users): ``T`` routing iterations without gradient decide, per edge, a distribution
    :math:`p_{v,k}` over the factors (a softmax at temperature ``tau`` over the cosines of
    the channels), and the layer splits LightGCN's propagation between the factors with it,
    as DGCF's intent-aware graphs do:

    .. math::
        \mathbf{x}^{(l)}_{u,k} = \sum_{v \in \mathcal{N}(u)}
            \frac{p^{(l)}_{v,k}}{\sqrt{|\mathcal{N}(u)||\mathcal{N}(v)|}}
            \mathbf{x}^{(l-1)}_{v,k}, \qquad \mathbf{x}^{(0)} = \mathbf{e}.

    The final channels are those of the last layer, :math:`\mathbf{u}_k =
    \mathbf{x}^{(L)}_{u,k}` (``layer_combine="last"``), or the mean :math:`\frac{1}{L+1}
    \sum_{l=0}^{L} \mathbf{x}^{(l)}_{u,k}` (``"mean"``, DGCF's), and a user–item score is
    :math:`s_{ui} = \sum_k \langle \mathbf{u}_k, \mathbf{i}_k \rangle` (with
    ``score="cosine"``, :math:`\mathbf{u}` and :math:`\mathbf{i}` are first divided by their
    norms over all ``K`` channels; with ``item_bias``, a learned :math:`b_i` is added). With
    ``K = 1``, ``layer_combine="mean"`` and ``score="dot"`` the model is LightGCN. DGCF itself
    normalises each factor's graph by its routed degrees :math:`\sum_v p_{v,k}` and
    accumulates its routing logits over iterations; here the degrees are the graph's, so the
    K factor graphs add up to LightGCN's.

    Why the defaults (``init="spectral"``, ``tau=0.05``, ``routing_norm="node"``,
    ``layer_combine="mean"``): the routing only decides something if the channels differ
    before it runs and an edge can commit to one factor. From a random start the channels
    have nothing to route on, and at ``tau = 1`` the weights stay near uniform; from the
    spectral start at ``tau = 0.05`` an edge puts most of its weight on one factor. The mean
    keeps LightGCN's direct term :math:`\langle \mathbf{e}_u, \mathbf{e}_i \rangle` in every
    score, and with it the ranking; that term also gives every channel of both ends of an
    interaction a small gradient, so an item's unused channels grow a little. With
    DisenGCN's per-channel scaling (``routing_norm="channel"``) those near-zero channels
    count as much as the item's main one in the routing, and the routing loses the clusters
    the channels still hold (planted AMI of the routing 0.49 / 0.42 at purity 0.9 / 0.7
    against 0.78 / 0.85 for the items' largest channel); ``routing_norm="node"`` weighs each
    channel by its share of the node's norm, and the routing keeps them (0.96 / 0.88).
    The measurements are in ``docs/results.md``.

    Training draws, for every training edge, one item uniformly as its negative (resampled
    while it is a training positive of the user, if ``reject_positives``) and minimises

    .. math::
        \mathcal{L} = \underbrace{\operatorname{mean}\,\mathrm{softplus}(s_{uj} - s_{ui})}_{bpr}
        + \lambda \underbrace{\tfrac{1}{2B}(\|\mathbf{e}_u\|^2 + \|\mathbf{e}_i\|^2
        + \|\mathbf{e}_j\|^2)}_{reg}
        + \gamma \underbrace{\frac{2}{K(K+1)} \sum_{k=1}^{K-1} \operatorname{dCor}(
            \mathbf{X}_k, \mathbf{X}_{k+1})}_{cor}

    with :math:`\mathbf{e}` the ego (input) embeddings of the batch and
    :math:`\mathbf{X}_k` channel :math:`k` of the final representations of a sample of the
    batch's users and items (DGCF's penalty: adjacent channel pairs, divided by
    :math:`K(K+1)/2`). The whole graph is propagated for every batch, or, with
    ``neighbors=S``, the computation graph of the batch's users and items in which every node
    reads at most ``S`` neighbours per layer; a node with more reads ``S`` of them drawn
    uniformly with replacement (in the linear sum, scaled by :math:`|\mathcal{N}(u)| / S`, so
    that it is unbiased for given routing weights; the routing itself is only
    approximated). With ``S`` at least the largest degree the update
    is exactly the full-graph one. With ``loss="softmax"`` the BPR term is replaced by
    the sampled softmax :math:`\operatorname{mean}\,[-\log \operatorname{softmax}(s_{ui} /
    \tau_s)]` over the positive and ``num_negatives`` uniform items shared by the batch (a
    shared item equal to the row's positive is left out), and the L2 term covers
    :math:`\mathbf{e}_u` and :math:`\mathbf{e}_i` only.

    In eval mode the propagated representations and routing weights are cached until the
    parameters change (any in-place update, e.g. an optimiser step or ``load_state_dict``,
    bumps their version counters), they move to another device or dtype, or the model
    switches between training and eval mode (so a
    changed non-parameter setting takes effect); calling :meth:`eval` on a model already in
    eval mode keeps it.

    Factor contract: the routing weights of the last layer give, for every interaction, a
    distribution over factors (the mean of the user-side and the item-side routing of the
    edge); :meth:`item_factor_weights` / :meth:`user_factor_weights` average them over a
    node's interactions (uniform for a node without any). :meth:`explain` splits a score's
    inner product (not the item bias) into the positive parts of the per-factor inner
    products, normalised to sum to one (uniform when no factor contributes positively).

    Args:
        config: the hyperparameters.
        train_data: the training :class:`~disentangle.data.InteractionData`; its graph is the
            one propagated.
    """

    name = "disengcn"
    Config = DisenGCNConfig
    supports_new_users = False
    # BPR recommenders are compared at k=20 (LightGCN, DGCF) with recall = hits / |test|.
    defaults: ClassVar[dict] = {
        "data": {"protocol": "ratio"},
        "train": {"epochs": 100, "lr": 5e-3, "ks": [20, 50], "select": "recall@20"}}

    def __init__(self, config: DisenGCNConfig, train_data: InteractionData) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.num_factors = config.num_factors
        self.factor_dim = config.factor_dim
        self.num_users = train_data.num_users
        self.num_items = train_data.num_items
        self._version = 0
        self._cache: tuple[tuple, tuple[Tensor, Tensor, Tensor]] | None = None

        channels = config.num_factors * config.factor_dim
        self.user_embedding = torch.nn.Embedding(self.num_users, channels)
        self.item_embedding = torch.nn.Embedding(self.num_items, channels)
        self.item_bias = (torch.nn.Parameter(torch.zeros(self.num_items)) if config.item_bias
                          else None)
        self.convs = torch.nn.ModuleList(
            DisenConv(channels, config.num_factors, iterations=config.iterations,
                      tau=config.tau, routing_norm=config.routing_norm,
                      dropout=config.dropout, self_loops="keep",
                      output="linear", cached=True)
            for _ in range(config.num_layers))

        users, items = train_data.edge_index
        items_as_nodes = items + self.num_users
        # Edges (source -> target): first every item -> its user, then every user -> its item.
        edge_index = torch.cat([torch.stack([items_as_nodes, users]),
                                torch.stack([users, items_as_nodes])], dim=1)
        self.register_buffer("edge_index", edge_index, persistent=False)
        self.register_buffer("edge_users", users.clone(), persistent=False)
        self.register_buffer("edge_items", items.clone(), persistent=False)
        # sampling runs on the CPU, with the batches' generator, wherever the model is
        self._incoming = incoming_csr(edge_index, self.num_users + self.num_items)
        rowptr = self._incoming[0]
        degree = (rowptr[1:] - rowptr[:-1]).float()  # interactions of every user and item
        self.register_buffer("degree", degree, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Draw the embeddings (``init``) and zero the item biases.

        ``"normal"``: every entry :math:`\mathcal{N}(0, 0.1^2)` (LightGCN's; with Adam the
        angular step is about lr / norm, so 70k-row tables need no fan-based shrinking).
        ``"spectral"``: :func:`~disentangle.models.factor_init.spectral_factors` on the
        training graph gives every item a unit vector :math:`\hat{\mathbf{v}}_i` (its
        spectral embedding, ``d`` dimensions) and a cluster :math:`c(i) \in \{1..K\}`
        (spherical k-means); with :math:`s = 0.1\sqrt{d}` (the norm of a normal channel)

        .. math::
            \mathbf{e}_{i,k} = [k = c(i)]\, s\, \hat{\mathbf{v}}_i, \qquad
            \mathbf{e}_{u,k} = \frac{s}{|\mathcal{N}(u)|} \sum_{i \in \mathcal{N}(u),\,
                c(i) = k} \hat{\mathbf{v}}_i,

        so an item's other channels are zero (cosine 0 to everything) and a user's channel
        ``k`` is the share of cluster ``k`` in its history times the mean direction of those
        items. The first routing then sends an edge to its item's cluster (cosine near 1
        against 0 elsewhere). The k-means seed is drawn from torch's generator, so
        ``torch.manual_seed`` fixes it.
        """
        if self.config.init == "normal":
            torch.nn.init.normal_(self.user_embedding.weight, std=0.1)
            torch.nn.init.normal_(self.item_embedding.weight, std=0.1)
        else:
            users, items = self._spectral_embeddings()
            with torch.no_grad():
                self.user_embedding.weight.copy_(users)
                self.item_embedding.weight.copy_(items)
        if self.item_bias is not None:
            torch.nn.init.zeros_(self.item_bias)
        for conv in self.convs:
            conv.reset_parameters()
        self._invalidate()

    def _spectral_embeddings(self) -> tuple[Tensor, Tensor]:
        """The ``N x K*d`` and ``M x K*d`` starting embeddings of ``init="spectral"``."""
        k, d = self.num_factors, self.factor_dim
        users, items = self.edge_users.cpu().numpy(), self.edge_items.cpu().numpy()
        matrix = sp.csr_matrix((np.ones(len(users)), (users, items)),
                               shape=(self.num_users, self.num_items))
        seed = int(torch.randint(2**31 - 1, ()))
        start = spectral_factors(matrix, d, k, seed=seed)
        norms = np.linalg.norm(start.items, axis=1, keepdims=True)
        unit = torch.as_tensor(start.items / np.maximum(norms, 1e-12), dtype=torch.float32)
        unit = unit * 0.1 * math.sqrt(d)
        labels = torch.as_tensor(start.labels, dtype=torch.long)
        item_out = torch.zeros(self.num_items, k, d)
        item_out[torch.arange(self.num_items), labels] = unit
        user_out = torch.zeros(self.num_users, k, d)
        users_t, items_t = torch.as_tensor(users), torch.as_tensor(items)
        share = self.degree[:self.num_users].cpu().clamp(min=1)[users_t].unsqueeze(1)
        user_out.index_put_((users_t, labels[items_t]), unit[items_t] / share, accumulate=True)
        device = self.user_embedding.weight.device
        return user_out.flatten(1).to(device), item_out.flatten(1).to(device)

    # -- propagation --------------------------------------------------------------------
    def embed(self) -> tuple[Tensor, Tensor]:
        """Propagate the whole graph: ``N x K x d`` user and ``M x K x d`` item
        representations."""
        users, items, _ = self._propagate(with_routing=False)
        return users, items

    def _propagate(self, with_routing: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """:meth:`embed`, and with ``with_routing`` the ``E x K`` routing weights of the last
        layer per interaction."""
        x = ego = self._ego()
        weight = self._lightgcn_weight(self.edge_index)
        layers = []
        routing = None
        for conv in self.convs:
            if with_routing and conv is self.convs[-1]:
                x, (_, routing) = conv(x, self.edge_index, weight, return_routing=True)
            else:
                x = conv(x, self.edge_index, weight)
            layers.append(x)
        out = self._combine(ego, layers)
        per_interaction = None
        if routing is not None:
            num_edges = self.edge_users.numel()
            per_interaction = (routing[:num_edges] + routing[num_edges:]).detach() / 2
        return out[:self.num_users], out[self.num_users:], per_interaction

    def _propagate_blocks(self, nodes: Tensor,
                          blocks: list[tuple[Tensor, tuple[int, int]]]) -> Tensor:
        """``B x K x d`` representations of the first ``B`` of ``nodes`` (users, then items
        offset by the number of users), propagated on the sampled ``blocks`` of
        :func:`~disentangle.data.neighbors.sample_blocks`."""
        ego = self._ego()[nodes]
        num_seeds = blocks[-1][1][1]
        x, layers = ego, []
        for conv, (edge_index, (_, num_computed)) in zip(self.convs, blocks):
            # a node that reads S < |N(u)| sampled neighbours scales them by |N(u)| / S
            dst = nodes[edge_index[1]]
            read = torch.bincount(edge_index[1], minlength=num_computed)
            weight = self._lightgcn_weight(torch.stack([nodes[edge_index[0]], dst])) * (
                self.degree[dst] / read[edge_index[1]])
            x = conv((x, x[:num_computed]), edge_index, weight)
            layers.append(x[:num_seeds])
        return self._combine(ego[:num_seeds], layers)

    def _ego(self) -> Tensor:
        """The free embeddings of all nodes: users, then items."""
        return torch.cat([self.user_embedding.weight, self.item_embedding.weight])

    def _lightgcn_weight(self, edge_index: Tensor) -> Tensor:
        """``1 / sqrt(|N(v)| |N(u)|)`` for the edges ``v -> u`` (global node ids)."""
        return (self.degree[edge_index[0]] * self.degree[edge_index[1]]).rsqrt()

    def _combine(self, ego: Tensor, layers: list[Tensor]) -> Tensor:
        """The final ``n x K x d`` channels from the ego embeddings and the layer outputs
        (``n x K*d`` each): ``layer_combine``, then, with ``score="cosine"``, unit length."""
        if self.config.layer_combine == "mean":
            out = torch.stack([ego, *layers]).mean(0)
        else:
            out = layers[-1]
        out = out.view(len(out), self.num_factors, self.factor_dim)
        if self.config.score == "cosine":
            out = F.normalize(out.flatten(1), dim=1).view_as(out)
        return out

    def _inference(self) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`_propagate` with routing, without gradient, cached in eval mode."""
        weight = self.user_embedding.weight
        key = (self._version, weight.device, weight.dtype,
               *(p._version for p in self.parameters()))
        if not self.training and self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        with torch.no_grad():
            out = self._propagate(with_routing=True)
        if not self.training:
            self._cache = (key, out)
        return out

    def train(self, mode: bool = True) -> DisenGCN:
        if mode != self.training:
            self._invalidate()
        return super().train(mode)

    def _invalidate(self) -> None:
        self._version += 1
        self._cache = None

    # -- training -----------------------------------------------------------------------
    def batches(self, train, generator: torch.Generator) -> Iterator[tuple]:
        """One epoch of ``(users, positive items, negative items)``: every training edge once,
        in random order, with one uniformly drawn negative item each (``loss="bpr"``) or
        ``num_negatives`` uniformly drawn items shared by the batch (``loss="softmax"``).

        With ``neighbors > 0`` each batch also carries its sampled computation graph:
        ``(..., nodes, blocks, index)`` with ``nodes`` and ``blocks`` from
        :func:`~disentangle.data.neighbors.sample_blocks` and ``index`` the positions of the
        batch's users, positives and negatives (concatenated) among the ``nodes``."""
        if (train.num_users, train.num_items) != (self.num_users, self.num_items):
            raise ValueError(f"train has {train.num_users} users and {train.num_items} items, "
                             f"the model {self.num_users} and {self.num_items}")
        users = torch.as_tensor(train.users, dtype=torch.long)
        items = torch.as_tensor(train.items, dtype=torch.long)
        order = torch.randperm(len(users), generator=generator)
        users, items = users[order], items[order]
        softmax = self.config.loss == "softmax"
        if not softmax:
            negatives = torch.randint(self.num_items, (len(users),), generator=generator)
            if self.config.reject_positives:
                reject_positives(users, negatives, items, self.num_items, generator)
        for start in range(0, len(users), self.config.batch_size):
            batch = slice(start, start + self.config.batch_size)
            neg = (torch.randint(self.num_items, (self.config.num_negatives,), generator=generator)
                   if softmax else negatives[batch])
            yield users[batch], items[batch], neg, *self._sample(users[batch], items[batch], neg,
                                                                generator)

    def num_batches(self, train) -> int:
        return math.ceil(len(train.users) / self.config.batch_size)

    def _sample(self, users: Tensor, pos: Tensor, neg: Tensor,
                generator: torch.Generator) -> tuple:
        """``(nodes, blocks, index)`` of a batch with ``neighbors > 0`` (see :meth:`batches`),
        else nothing."""
        if not self.config.neighbors:
            return ()
        seeds, index = torch.unique(torch.cat([users, pos + self.num_users,
                                               neg + self.num_users]), return_inverse=True)
        nodes, blocks = sample_blocks(*self._incoming, seeds, self.config.neighbors,
                                      len(self.convs), generator)
        return nodes, blocks, index

    def loss(self, batch: tuple, step: int) -> tuple[Tensor, dict[str, float]]:
        """``rank + reg_weight * reg + cor_weight * cor`` (``rank`` is the BPR or sampled
        softmax loss); the parts are logged unweighted."""
        device = self.user_embedding.weight.device
        users, pos, neg = (t.to(device) for t in batch[:3])
        if len(batch) > 3:  # a sampled computation graph (neighbors > 0)
            nodes, blocks, index = batch[3:]
            out = self._propagate_blocks(nodes.to(device), [
                (edge_index.to(device), size) for edge_index, size in blocks])[index.to(device)]
            user_rows, pos_rows, neg_rows = out.split([len(users), len(pos), len(neg)])
        else:
            user_out, item_out = self.embed()
            user_rows, pos_rows, neg_rows = user_out[users], item_out[pos], item_out[neg]
        u = user_rows.flatten(1)
        positive = (u * pos_rows.flatten(1)).sum(1) + self._bias(pos)
        reg_rows = [self.user_embedding(users), self.item_embedding(pos)]
        if self.config.loss == "softmax":
            # -log softmax of the positive among [positive, negatives], all over tau, written
            # as logaddexp(p, logsumexp(n)) - p: no B x (N + 1) concatenation, and the bias
            # and temperature folded into one matrix product
            tau = self.config.softmax_tau
            positive = positive / tau
            neg_bias = torch.as_tensor(self._bias(neg), dtype=u.dtype, device=u.device) / tau
            negative = torch.addmm(neg_bias, u / tau, neg_rows.flatten(1).t())
            # a shared negative that is the row's own positive is not a negative for it; the
            # lowest finite value (not -inf) keeps a row whose negatives are all its positive
            # free of NaN gradients
            negative[_collisions(pos, neg)] = torch.finfo(negative.dtype).min
            rank = (torch.logaddexp(positive, torch.logsumexp(negative, 1)) - positive).mean()
        else:
            negative = (u * neg_rows.flatten(1)).sum(1) + self._bias(neg)
            rank = F.softplus(negative - positive).mean()
            reg_rows.append(self.item_embedding(neg))
        reg = 0.5 * sum(rows.pow(2).sum() for rows in reg_rows) / len(users)
        loss = rank + self.config.reg_weight * reg
        cor = torch.zeros((), device=device)
        if self.config.cor_weight > 0 and self.num_factors > 1:
            n = self.config.cor_sample
            sample = torch.cat([_distinct(users[:n], user_rows[:n]),
                                _distinct(pos[:n], pos_rows[:n])])
            cor = channel_distance_correlation(sample)
            loss = loss + self.config.cor_weight * cor
        return loss, {self.config.loss: rank.item(), "reg": reg.item(), "cor": cor.item()}

    def _bias(self, items: Tensor | slice) -> Tensor | float:
        """The learned biases of ``items`` (``item_bias``), else 0."""
        return 0.0 if self.item_bias is None else self.item_bias[items]

    # -- ranking ------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, users: Tensor, history: Tensor) -> Tensor:
        """``B x M`` inner products of the final representations (unit length with
        ``score="cosine"``), plus the item biases with ``item_bias``; ``history`` is not used
        (transductive model)."""
        user_out, item_out, _ = self._inference()
        return user_out[users].flatten(1) @ item_out.flatten(1).t() + self._bias(slice(None))

    # -- K-factor contract --------------------------------------------------------------
    def item_factor_weights(self) -> Tensor:
        _, _, routing = self._inference()
        return self._node_weights(routing, self.edge_items, self.num_items)

    def user_factor_weights(self, users: Tensor, history: Tensor) -> Tensor:
        _, _, routing = self._inference()
        return self._node_weights(routing, self.edge_users, self.num_users)[users]

    def factor_embeddings(self, users: Tensor, history: Tensor) -> Tensor:
        return self._inference()[0][users]

    def item_factor_embeddings(self) -> Tensor:
        return self._inference()[1]

    def explain(self, users: Tensor, history: Tensor, items: Tensor) -> Tensor:
        user_out, item_out, _ = self._inference()
        per_factor = (user_out[users].unsqueeze(1) * item_out[items]).sum(-1).clamp(min=0)
        total = per_factor.sum(-1, keepdim=True)
        uniform = torch.full_like(per_factor, 1.0 / self.num_factors)
        return torch.where(total > 0, per_factor / total.clamp(min=1e-12), uniform)

    def _node_weights(self, routing: Tensor, index: Tensor, num_nodes: int) -> Tensor:
        """Mean routing distribution over each node's interactions; uniform without any."""
        weights = scatter(routing, index, dim=0, dim_size=num_nodes, reduce="mean")
        degree = torch.bincount(index, minlength=num_nodes)
        return torch.where((degree > 0).unsqueeze(1), weights,
                           torch.full_like(weights, 1.0 / self.num_factors))

    def __repr__(self) -> str:
        c = self.config
        return (f"{type(self).__name__}(users={self.num_users}, items={self.num_items}, "
                f"factors={c.num_factors}x{c.factor_dim}, layers={c.num_layers}, "
                f"iterations={c.iterations})")


def channel_distance_correlation(x: Tensor) -> Tensor:
    """DGCF's independence penalty on the ``K`` channels of ``x`` (``n x K x d``): the
    distance correlations (Székely et al., 2007) of the ``K - 1`` adjacent pairs
    ``(k, k+1)``, summed and divided by ``K(K+1)/2``; 0 when the channels are independent."""
    k = x.size(1)
    centred = [_centred_distances(x[:, j]) for j in range(k)]

    def dcov(a: Tensor, b: Tensor) -> Tensor:
        # DGCF's guard: the square root of a clamped value plus a small constant.
        return torch.sqrt((a * b).mean().clamp(min=0) + 1e-8)

    own = [dcov(a, a) for a in centred]
    pairs = [dcov(centred[j], centred[j + 1]) / torch.sqrt(own[j] * own[j + 1])
             for j in range(k - 1)]
    return torch.stack(pairs).sum() / (k * (k + 1) / 2)


def _centred_distances(x: Tensor) -> Tensor:
    """Double-centred Euclidean distance matrix of the rows of ``x``."""
    sq = (x * x).sum(1)
    dist = torch.sqrt((sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * x @ x.t()).clamp(min=0) + 1e-8)
    return dist - dist.mean(0, keepdim=True) - dist.mean(1, keepdim=True) + dist.mean()


def _distinct(ids: Tensor, rows: Tensor) -> Tensor:
    """The rows of the first occurrence of every distinct id, in increasing id order."""
    distinct, inverse = torch.unique(ids, return_inverse=True)
    first = torch.full((len(distinct),), len(ids), device=ids.device).scatter_reduce(
        0, inverse, torch.arange(len(ids), device=ids.device), "amin")
    return rows[first]


def _collisions(pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    """``(rows, cols)`` of every pair with ``neg[cols] == pos[rows]``, found by binary search
    in the sorted ``neg`` (no ``B x N`` comparison; one device sync, for the number of pairs)."""
    sorted_neg, order = neg.sort()
    start = torch.searchsorted(sorted_neg, pos)
    count = torch.searchsorted(sorted_neg, pos, right=True) - start
    total = int(count.sum())
    rows = torch.repeat_interleave(count, output_size=total)
    within = torch.arange(total, device=pos.device) - torch.repeat_interleave(
        count.cumsum(0) - count, count, output_size=total)
    return rows, order[torch.repeat_interleave(start, count, output_size=total) + within]
