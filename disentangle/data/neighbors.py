"""Neighbour sampling for mini-batch message passing (GraphSAGE / DisenGCN's ``nbsz``).

PyG's own :class:`~torch_geometric.sampler.NeighborSampler` needs ``pyg-lib`` or
``torch-sparse``, which have no wheels for current torch; this is the small vectorised part
of it our models need, on a graph stored by target in CSR form.
"""
from __future__ import annotations

import torch
from torch import Tensor


def incoming_csr(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """``(rowptr, sources)`` of ``edge_index`` (``2 x E``, row 0 sources) sorted by target:
    the sources of the edges into node ``t`` are ``sources[rowptr[t]:rowptr[t + 1]]``."""
    src, dst = edge_index
    order = torch.argsort(dst, stable=True)
    rowptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=edge_index.device)
    torch.cumsum(torch.bincount(dst, minlength=num_nodes), 0, out=rowptr[1:])
    return rowptr, src[order]


def sample_incoming(rowptr: Tensor, sources: Tensor, targets: Tensor, num_neighbors: int,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Sample the incoming edges of ``targets``.

    A target with at most ``num_neighbors`` incoming edges keeps all of them; one with more
    gets ``num_neighbors`` of them drawn uniformly with replacement (``generator`` must live
    on the device of ``targets``).

    Returns:
        ``(source, position)``: for every sampled edge, its source node and the position of
        its target in ``targets``; edges are grouped by target, in the order of ``targets``.
    """
    start = rowptr[targets]
    degree = rowptr[targets + 1] - start
    take = degree.clamp(max=num_neighbors)
    position = torch.repeat_interleave(torch.arange(len(targets), device=targets.device), take)
    first = torch.cumsum(take, 0) - take
    offset = torch.arange(len(position), device=targets.device) - first[position]
    edge_degree = degree[position]
    sampled = edge_degree > num_neighbors
    draw = torch.rand(int(sampled.sum()), generator=generator, device=targets.device)
    offset[sampled] = (draw * edge_degree[sampled]).long().clamp(max=edge_degree[sampled] - 1)
    return sources[start[position] + offset], position


def sample_blocks(rowptr: Tensor, sources: Tensor, seeds: Tensor, num_neighbors: int,
                  num_layers: int, generator: torch.Generator | None = None
                  ) -> tuple[Tensor, list[tuple[Tensor, tuple[int, int]]]]:
    """The computation graph of ``num_layers`` message-passing layers for the distinct nodes
    ``seeds``, with at most ``num_neighbors`` sampled incoming edges per node and layer.

    Returns:
        ``(nodes, blocks)``. ``nodes`` are the global ids of every node the first layer reads,
        ordered so that the nodes each layer computes are a prefix of those it reads, and the
        last layer computes ``seeds`` (the first ``len(seeds)`` nodes). ``blocks[l]`` is
        ``(edge_index, (num_read, num_computed))`` for layer ``l + 1``: its bipartite edges in
        local ids, row 0 indexing the first ``num_read`` nodes and row 1 the first
        ``num_computed``.
    """
    local = torch.full((len(rowptr) - 1,), -1, dtype=torch.long, device=seeds.device)
    nodes = seeds
    local[nodes] = torch.arange(len(nodes), device=seeds.device)
    blocks: list[tuple[Tensor, tuple[int, int]]] = []
    for _ in range(num_layers):  # from the last layer inwards: its targets are all nodes so far
        src, position = sample_incoming(rowptr, sources, nodes, num_neighbors, generator)
        new = torch.unique(src[local[src] < 0])
        local[new] = torch.arange(len(nodes), len(nodes) + len(new), device=seeds.device)
        blocks.append((torch.stack([local[src], position]), (len(nodes) + len(new), len(nodes))))
        nodes = torch.cat([nodes, new])
    return nodes, blocks[::-1]
