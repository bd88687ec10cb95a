"""`DisenConv`: the neighbourhood-routing layer of DisenGCN as a PyG message-passing layer."""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.resolver import activation_resolver
from torch_geometric.utils import add_self_loops, remove_self_loops

_SELF_LOOPS = ("remove", "keep", "add")
_OUTPUTS = ("normalized", "linear")
_NORMS = ("channel", "node")


class DisenConv(MessagePassing):
    r"""The neighbourhood routing layer from the `"Disentangled Graph Convolutional
    Networks" <https://proceedings.mlr.press/v97/ma19a.html>`_ paper (DisenGCN).

    Every node is represented by :math:`K` channels (factors) of :math:`d` features, each
    channel :math:`\ell_2`-normalised, :math:`\mathbf{z}_{u,k} = \mathbf{x}_{u,k} /
    \|\mathbf{x}_{u,k}\|_2`. Starting from :math:`\mathbf{c}_{u,k} = \mathbf{z}_{u,k}`, the
    layer runs :math:`T` routing iterations; each one decides, per edge :math:`(v \to u)`,
    which factor explains it (a softmax over the factors, not over the neighbours), and
    re-centres every channel on the neighbours routed to it:

    .. math::
        p_{v,k} &= \frac{\exp(\mathbf{z}_{v,k}^{\top} \mathbf{c}_{u,k} / \tau)}
                        {\sum_{k'=1}^{K} \exp(\mathbf{z}_{v,k'}^{\top} \mathbf{c}_{u,k'} / \tau)},
        \qquad v \in \mathcal{N}(u)

        \mathbf{c}_{u,k} &\leftarrow
            \frac{\mathbf{z}_{u,k} + \sum_{v \in \mathcal{N}(u)} p_{v,k} \mathbf{z}_{v,k}}
                 {\left\| \mathbf{z}_{u,k} + \sum_{v \in \mathcal{N}(u)} p_{v,k}
                  \mathbf{z}_{v,k} \right\|_2}

    and outputs :math:`\mathbf{x}^{\prime}_{u} = [\mathbf{c}_{u,1}, \ldots, \mathbf{c}_{u,K}]`
    after iteration :math:`T`.

    With :obj:`routing_norm="node"` the :math:`K` channels of a node are scaled to unit
    length together rather than one by one, :math:`\mathbf{z}_{u,k} = \mathbf{x}_{u,k} /
    \|\mathbf{x}_u\|_2` (and the centres likewise, :math:`\mathbf{c}_u` to unit length over
    all :math:`K` channels): a channel's routing score is then its cosine scaled by its share
    of the node's norm, so a channel a node barely uses cannot attract edges by its direction
    alone (with per-channel scaling, a near-zero channel counts as much as the node's main
    one).

    With :obj:`output="linear"` the routing is the same, but the last aggregation is the
    linear, weighted sum of the neighbours' raw (not normalised) channels, as in the
    intent-aware graphs of DGCF (Wang et al., SIGIR 2020) and the propagation of LightGCN,

    .. math::
        \mathbf{x}^{\prime}_{u,k} = \sum_{v \in \mathcal{N}(u)} w_{vu} \, p_{v,k} \,
            \mathbf{x}_{v,k},

    with edge weights :math:`w_{vu}` (:obj:`edge_weight`, e.g. :math:`1/\sqrt{|\mathcal{N}(u)|
    |\mathcal{N}(v)|}`; one if not given; constants, without gradient) and no self term.
    Since the routing weights of an edge sum to one over the factors, with :math:`K = 1`
    this is exactly a LightGCN layer.

    The first :math:`T - 1` iterations only refine the routing and run without gradient; the
    last aggregation uses the routing weights of iteration :math:`T` as constants, so the
    loss reaches the inputs only through the final weighted sum (normalised, or linear).
    (The authors' implementation back-propagates through every iteration; here the routing
    is an E-step, as in the design of this package.)

    Two kernels compute the same thing. The fused one (default) stores the graph as a CSR
    matrix and uses a sampled dense-dense product for the routing scores and one sparse-dense
    product per factor for the aggregation (:meth:`message_and_aggregate`); it never holds an
    :math:`|\mathcal{E}| \times K \times d` tensor. The other gathers per-edge features
    (:meth:`edge_update`, :meth:`message`); it is used with :obj:`fused=False`.

    Args:
        channels (int): Size of each output sample, :math:`K \cdot d`; also the size of each
            input sample unless :obj:`in_channels` is given. Must be divisible by
            :obj:`num_factors`.
        num_factors (int): The number of factors (channels) :math:`K`.
        iterations (int, optional): The number of routing iterations :math:`T \geq 1`.
            (default: :obj:`3`)
        tau (float, optional): The softmax temperature :math:`\tau > 0`.
            (default: :obj:`1.0`)
        dropout (float, optional): Message dropout: in the final (differentiable) aggregation
            each factor message (:math:`p_{v,k}\mathbf{z}_{v,k}`, or
            :math:`w_{vu} p_{v,k}\mathbf{x}_{v,k}` with :obj:`output="linear"`) is zeroed with this
            probability during training (survivors are scaled by :math:`1/(1-p)`). The routing
            iterations always see every message. (default: :obj:`0.0`)
        in_channels (int, optional): If set, inputs are first projected to the :math:`K`
            channels by a linear map and :obj:`act`, as DisenGCN does for raw node features,
            :math:`\mathbf{x}_{u,k} = \sigma(\mathbf{W}_k \mathbf{x}_u + \mathbf{b}_k)`.
            Use :obj:`-1` for lazy initialisation. If :obj:`None`, the inputs already are
            :math:`K \cdot d`-dimensional (e.g. free embeddings of a recommender).
            (default: :obj:`None`)
        act (str or Callable, optional): The non-linearity of the projection; without
            :obj:`in_channels` only the default is accepted (there is no projection).
            (default: :obj:`"relu"`)
        self_loops (str, optional): What to do with explicit self-loops :math:`(u \to u)` in
            :obj:`edge_index` of a homogeneous graph. The self term
            :math:`\mathbf{z}_{u,k}` of the update rule is always added, so by default
            (:obj:`"remove"`) explicit self-loops are dropped and do not count the node twice;
            :obj:`"keep"` uses :obj:`edge_index` as given, :obj:`"add"` removes and then adds
            one self-loop per node (a routed copy of the node on top of the self term).
            Bipartite inputs are always used as given (:obj:`"add"` is refused there).
            (default: :obj:`"remove"`)
        routing_norm (str, optional): :obj:`"channel"` (DisenGCN: every channel to unit
            length) or :obj:`"node"` (all :math:`K` channels of a node together, see above).
            (default: :obj:`"channel"`)
        output (str, optional): :obj:`"normalized"` (DisenGCN, unit-length channels) or
            :obj:`"linear"` (the weighted sum of raw neighbour channels above).
            (default: :obj:`"normalized"`)
        fused (bool, optional): Use the sparse-matrix kernel. (default: :obj:`True`)
        cached (bool, optional): Keep the CSR structure of the last graph and reuse it while
            the layer is called with the same, unmodified :obj:`edge_index` tensor object
            (e.g. a model's buffer in transductive learning); needs :obj:`fused=True`, the
            kernel that builds it. (default: :obj:`False`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V}_s|, F_{in}), (|\mathcal{V}_t|, F_{in}))` if bipartite,
          where :math:`F_{in}` is :obj:`channels` or :obj:`in_channels`;
          edge indices :math:`(2, |\mathcal{E}|)` (row 0: source :math:`v`, row 1: target
          :math:`u`)
        - **output:** node features :math:`(|\mathcal{V}|, K \cdot d)` or
          :math:`(|\mathcal{V}_t|, K \cdot d)` if bipartite, factor :math:`k` in columns
          :math:`kd, \ldots, (k+1)d - 1`, each factor of unit length (each row with
          :obj:`routing_norm="node"`; raw sums with :obj:`output="linear"`); if
          :obj:`return_routing=True`, also :math:`((2, |\mathcal{E}'|), (|\mathcal{E}'|, K))`:
          the edges used (after self-loop handling, in input order) and their routing weights
          of the last iteration, each row a distribution over the factors.
    """

    def __init__(
        self,
        channels: int,
        num_factors: int,
        iterations: int = 3,
        tau: float = 1.0,
        dropout: float = 0.0,
        in_channels: int | None = None,
        act: str | Callable | None = "relu",
        self_loops: str = "remove",
        routing_norm: str = "channel",
        output: str = "normalized",
        fused: bool = True,
        cached: bool = False,
        **kwargs,
    ):
        kwargs.setdefault("aggr", "add")
        # Node features are (N, K, d) inside the layer, so nodes live on dim 0.
        kwargs.setdefault("node_dim", 0)
        super().__init__(**kwargs)
        _check("num_factors", num_factors, num_factors >= 1, "an integer >= 1")
        _check("channels", channels, channels >= 1 and channels % num_factors == 0,
               f"a positive multiple of num_factors={num_factors}")
        _check("iterations", iterations, iterations >= 1, "an integer >= 1")
        _check("tau", tau, tau > 0, "a float > 0")
        _check("dropout", dropout, 0.0 <= dropout < 1.0, "a float in [0, 1)")
        _check("self_loops", self_loops, self_loops in _SELF_LOOPS, f"one of {_SELF_LOOPS}")
        _check("routing_norm", routing_norm, routing_norm in _NORMS, f"one of {_NORMS}")
        _check("output", output, output in _OUTPUTS, f"one of {_OUTPUTS}")
        _check("act", act, in_channels is not None or act == "relu",
               "the default 'relu' without in_channels (there is no projection)")
        _check("cached", cached, fused or not cached,
               "False with fused=False (only the fused kernel builds a structure to keep)")
        self.channels = channels
        self.num_factors = num_factors
        self.factor_channels = channels // num_factors
        self.iterations = iterations
        self.tau = tau
        self.dropout = dropout
        self.in_channels = in_channels
        self.self_loops = self_loops
        self.routing_norm = routing_norm
        self.output = output
        self.fused = fused
        self.cached = cached
        self._cached_graph: _CSRGraph | None = None
        if in_channels is None:
            self.lin = None
            self.act = None
        else:
            self.lin = Linear(in_channels, channels, bias=True, weight_initializer="glorot")
            self.act = activation_resolver(act) if isinstance(act, str) else act
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.lin is not None:
            self.lin.reset_parameters()
        self._cached_graph = None

    def forward(self, x: Tensor | tuple[Tensor, Tensor], edge_index: Tensor,
                edge_weight: Tensor | None = None, return_routing: bool = False):
        r"""Route and aggregate.

        Args:
            x (torch.Tensor or (torch.Tensor, torch.Tensor)): Node features, or the features
                of the source and of the target nodes of a bipartite graph (the self term
                :math:`\mathbf{z}_{u}` then comes from the targets).
            edge_index (torch.Tensor): The :math:`2 \times |\mathcal{E}|` edges
                :math:`(v \to u)`, sources in row 0.
            edge_weight (torch.Tensor, optional): The :math:`|\mathcal{E}|` weights
                :math:`w_{vu}` of :obj:`output="linear"` (refused otherwise); self-loops
                added by :obj:`self_loops="add"` get weight one. (default: :obj:`None`)
            return_routing (bool, optional): Also return the edges used and their routing
                weights. (default: :obj:`False`)
        """
        if (not isinstance(edge_index, Tensor) or edge_index.layout != torch.strided
                or edge_index.dim() != 2 or edge_index.size(0) != 2):
            raise ValueError("edge_index must be a dense 2 x E integer tensor")
        bipartite = not isinstance(x, Tensor)
        if bipartite and self.self_loops == "add":
            raise ValueError("self_loops='add' is undefined for bipartite inputs")
        if bipartite:
            h_src, h_dst = self._channels(x[0]), self._channels(x[1])
        else:
            h_src = h_dst = self._channels(x)
        z_src = self._unit(h_src, factor_major=False)
        z_dst = self._unit(h_dst, factor_major=False) if bipartite else z_src
        size = (z_src.size(0), z_dst.size(0))
        linear = self.output == "linear"
        if edge_weight is not None and not linear:
            raise ValueError("edge_weight is only used by output='linear' (DisenGCN's "
                             "normalised output has no edge weights)")
        weight = None
        if edge_weight is not None:
            if edge_weight.shape != (edge_index.size(1),):
                raise ValueError(f"edge_weight must have one value per edge "
                                 f"({edge_index.size(1)}), got shape {tuple(edge_weight.shape)}")
            weight = edge_weight.detach().to(device=h_src.device, dtype=h_src.dtype)

        graph = None
        if self.fused:
            if weight is not None and not bipartite:
                _, weight = self._handle_self_loops(edge_index, size[0], weight)
            graph = self._csr_graph(edge_index, size, bipartite)
            edge_index = graph.edge_index
            if weight is not None:
                weight = graph.to_csr_order(weight)
            # The sparse kernels work one factor at a time: keep factors outermost (K x N x d).
            z_dst = z_dst.transpose(0, 1).contiguous()
            z_src = z_dst if not bipartite else z_src.transpose(0, 1).contiguous()
            h_src = h_src.transpose(0, 1).contiguous() if linear else h_src
        elif not bipartite:
            edge_index, weight = self._handle_self_loops(edge_index, size[0], weight)

        # A sparse adjacency makes `propagate` call the fused `message_and_aggregate`.
        adj = edge_index if graph is None else graph.adj_t
        c = z_dst
        for t in range(self.iterations):
            last = t == self.iterations - 1
            with torch.no_grad():
                if graph is None:
                    p = self.edge_updater(edge_index, z=(z_src, z_dst), c=c, size=size)
                else:
                    p = torch.softmax(graph.sddmm(c, z_src) / self.tau, dim=0)
            with _grad(last):
                q = F.dropout(p, self.dropout, self.training) if last else p
                if last and linear:
                    if weight is not None:  # p is E x K here, K x E (CSR order) when fused
                        q = q * (weight.unsqueeze(-1) if graph is None else weight)
                    c = self.propagate(adj, z=(h_src, h_dst), p=q, graph=graph, size=size)
                else:
                    agg = self.propagate(adj, z=(z_src, z_dst), p=q, graph=graph, size=size)
                    c = self._unit(z_dst + agg, factor_major=graph is not None)

        if graph is not None:
            c = c.transpose(0, 1)
        out = c.reshape(size[1], self.channels)
        if not return_routing:
            return out
        return out, (edge_index, p if graph is None else graph.to_input_order(p))

    def edge_update(self, z_j: Tensor, c_i: Tensor) -> Tensor:
        return torch.softmax((z_j * c_i).sum(dim=-1) / self.tau, dim=-1)

    def message(self, z_j: Tensor, p: Tensor) -> Tensor:
        return p.unsqueeze(-1) * z_j

    def message_and_aggregate(self, adj_t: Tensor, z: tuple[Tensor, Tensor], p: Tensor,
                              graph: _CSRGraph) -> Tensor:
        # The fused kernel's layout: z factor-major (K x N x d), p a K x E tensor in CSR order.
        return _FactorSpMM.apply(graph, p, z[0])

    def _channels(self, x: Tensor) -> Tensor:
        """``N x K x d`` factor channels of the input features (projected, not normalised)."""
        if self.lin is not None:
            x = self.lin(x)
            if self.act is not None:
                x = self.act(x)
        if x.dim() != 2 or x.size(1) != self.channels:
            raise ValueError(f"expected node features of shape (N, {self.channels}), "
                             f"got {tuple(x.shape)}")
        return x.reshape(x.size(0), self.num_factors, self.factor_channels)

    def _unit(self, x: Tensor, factor_major: bool) -> Tensor:
        """``x`` (``N x K x d``, or ``K x N x d`` if ``factor_major``) with every channel
        (``routing_norm="channel"``) or every node's ``K`` channels together (``"node"``)
        scaled to unit length."""
        if self.routing_norm == "channel":
            return F.normalize(x, dim=-1)
        dims = (0, 2) if factor_major else (1, 2)
        return x / x.pow(2).sum(dims, keepdim=True).sqrt().clamp(min=1e-12)

    def _handle_self_loops(self, edge_index: Tensor, num_nodes: int,
                           edge_weight: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if self.self_loops == "keep":
            return edge_index, edge_weight
        edge_index, edge_weight = remove_self_loops(edge_index, edge_weight)
        if self.self_loops == "add":
            edge_index, edge_weight = add_self_loops(edge_index, edge_weight, fill_value=1.0,
                                                     num_nodes=num_nodes)
        return edge_index, edge_weight

    def _csr_graph(self, edge_index: Tensor, size: tuple[int, int],
                   bipartite: bool) -> _CSRGraph:
        graph = self._cached_graph
        if (graph is not None and graph.source is edge_index and graph.size == size
                and graph.source_version == edge_index._version):
            return graph
        source = edge_index
        if not bipartite:
            edge_index, _ = self._handle_self_loops(edge_index, size[0])
        graph = _CSRGraph.build(edge_index, size, source)
        if self.cached:
            self._cached_graph = graph
        return graph

    def __repr__(self) -> str:
        proj = "" if self.in_channels is None else f"in_channels={self.in_channels}, "
        linear = ", output='linear'" if self.output == "linear" else ""
        if self.routing_norm == "node":
            linear = f", routing_norm='node'{linear}"
        return (f"{type(self).__name__}({self.channels}, {proj}num_factors={self.num_factors}, "
                f"iterations={self.iterations}, tau={self.tau}{linear})")


@dataclasses.dataclass(eq=False)
class _CSRGraph:
    """A graph stored by target (CSR of ``adj_t``) and by source (its transpose), so that the
    routing scores, the aggregation and its gradient are all sparse kernels.

    Routing weights live here as ``K x E`` tensors in CSR order (one contiguous row per
    factor, which is what the per-factor kernels and a softmax over factors want).
    """

    edge_index: Tensor  # 2 x E, input order
    source: Tensor  # the edge_index given to the layer (before self-loop handling)
    source_version: int  # its version counter when the structure was built
    size: tuple[int, int]  # (num_src, num_dst)
    inverse: Tensor  # E: CSR entry of each input edge
    adj_t: Tensor  # num_dst x num_src sparse CSR, values all one
    perm_t: Tensor  # E: CSR entry of each entry of the transpose
    crow_t: Tensor
    col_t: Tensor

    @classmethod
    def build(cls, edge_index: Tensor, size: tuple[int, int], source: Tensor) -> _CSRGraph:
        num_src, num_dst = size
        src, dst = edge_index
        order = torch.argsort(dst * num_src + src, stable=True)
        row, col = dst[order], src[order]
        perm_t = torch.argsort(col * num_dst + row, stable=True)
        # MKL's sparse kernels take 32-bit indices; 64-bit ones are converted on every call.
        itype = torch.int32 if max(len(order), num_src, num_dst) < 2**31 else torch.int64
        ones = torch.ones(len(order), device=edge_index.device)
        adj_t = _csr(_ptr(row, num_dst).to(itype), col.to(itype), ones, (num_dst, num_src))
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        return cls(edge_index, source, source._version, size, inverse, adj_t, perm_t,
                   _ptr(col[perm_t], num_src).to(itype), row[perm_t].to(itype))

    def sddmm(self, c: Tensor, z: Tensor) -> Tensor:
        """``K x E`` scores ``<z[k, v], c[k, u]>`` of the edges ``(v, u)``, in CSR order
        (``c``: ``K x N_dst x d``, ``z``: ``K x N_src x d``)."""
        adj_t = self.adj_t if self.adj_t.dtype == c.dtype else self.adj_t.to(c.dtype)
        return torch.stack([torch.sparse.sampled_addmm(adj_t, c[k], z[k].t(), beta=0.0).values()
                            for k in range(c.size(0))])

    def spmm(self, p: Tensor, z: Tensor) -> Tensor:
        """``out[k, u] = sum_v p[k, (v, u)] z[k, v]``."""
        crow, col = self.adj_t.crow_indices(), self.adj_t.col_indices()
        return _per_factor_spmm(crow, col, p, z, (self.size[1], self.size[0]))

    def spmm_t(self, p: Tensor, g: Tensor) -> Tensor:
        """``out[k, v] = sum_u p[k, (v, u)] g[k, u]`` (the transpose of :meth:`spmm`)."""
        # index_select is several times faster than p[:, perm_t] on CPU.
        return _per_factor_spmm(self.crow_t, self.col_t, p.index_select(1, self.perm_t), g,
                                self.size)

    def to_csr_order(self, values: Tensor) -> Tensor:
        """Per-edge ``values`` (:attr:`edge_index` order) in CSR order."""
        out = torch.empty_like(values)
        out[self.inverse] = values
        return out

    def to_input_order(self, p: Tensor) -> Tensor:
        """``E x K`` routing weights of the edges in :attr:`edge_index` order."""
        return p.index_select(1, self.inverse).t()


class _FactorSpMM(torch.autograd.Function):
    """:meth:`_CSRGraph.spmm` with the routing weights held fixed: gradient to ``z`` only."""

    @staticmethod
    def forward(ctx, graph: _CSRGraph, p: Tensor, z: Tensor) -> Tensor:
        ctx.graph = graph
        ctx.save_for_backward(p)
        return graph.spmm(p, z)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (p,) = ctx.saved_tensors
        return None, None, ctx.graph.spmm_t(p, grad)


def _per_factor_spmm(crow: Tensor, col: Tensor, p: Tensor, z: Tensor,
                     shape: tuple[int, int]) -> Tensor:
    """``K x N_out x d`` products of the ``K`` sparse matrices ``(crow, col, p[k])`` with the
    factors of ``z`` (``K x N_in x d``)."""
    return torch.stack([_csr(crow, col, p[k], shape) @ z[k] for k in range(z.size(0))])


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # sparse CSR support is "beta" in torch
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape)


def _ptr(index: Tensor, size: int) -> Tensor:
    """CSR row pointer of a sorted row index."""
    ptr = index.new_zeros(size + 1)
    torch.cumsum(torch.bincount(index, minlength=size), 0, out=ptr[1:])
    return ptr


def _grad(enabled: bool):
    """Leave autograd as it is, or switch it off."""
    return contextlib.nullcontext() if enabled else torch.no_grad()


def _check(name: str, value, ok: bool, accepted: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range: expected {accepted}")
