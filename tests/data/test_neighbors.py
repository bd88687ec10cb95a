"""Neighbour sampling (:mod:`disentangle.data.neighbors`) on small hand-made graphs."""
from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from disentangle.data.neighbors import incoming_csr, sample_blocks, sample_incoming

# (source, target) pairs, deliberately not sorted by target. Node 0 is the hub (5 incoming
# edges), 2 has the same edge twice, 7 has no incoming edge; the largest degree is 5.
EDGES = [(2, 0), (0, 1), (3, 2), (6, 4), (1, 0), (0, 6), (3, 2), (5, 0), (2, 1),
         (7, 5), (0, 4), (4, 0), (6, 3), (1, 4), (3, 0), (5, 4)]
NUM_NODES = 8
MAX_DEGREE = 5


def graph():
    return incoming_csr(torch.tensor(EDGES).T, NUM_NODES)


def incoming(target: int) -> Counter:
    """The multiset of sources of the edges into ``target``."""
    return Counter(s for s, t in EDGES if t == target)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def by_target(targets, source, position) -> list[Counter]:
    """The multiset of sampled sources for each entry of ``targets``."""
    out = [Counter() for _ in targets]
    for s, p in zip(source.tolist(), position.tolist()):
        out[p][s] += 1
    return out


def global_edges(nodes, edge_index) -> list[tuple[int, int]]:
    return sorted((int(nodes[r]), int(nodes[c])) for r, c in edge_index.T.tolist())


def test_incoming_csr_lists_every_incoming_edge_by_target():
    rowptr, sources = graph()
    assert rowptr.tolist()[0] == 0 and rowptr.tolist()[-1] == len(EDGES)
    for t in range(NUM_NODES):
        assert Counter(sources[rowptr[t]:rowptr[t + 1]].tolist()) == incoming(t)
    assert rowptr[7] == rowptr[8]  # no incoming edge
    assert sources[rowptr[2]:rowptr[3]].tolist() == [3, 3]  # the duplicate edge is kept


def test_sample_incoming_keeps_all_edges_of_low_degree_targets():
    targets = torch.tensor([1, 2, 4, 7])
    source, position = sample_incoming(*graph(), targets, num_neighbors=4, generator=gen())
    assert by_target(targets.tolist(), source, position) == [incoming(t) for t in [1, 2, 4, 7]]


def test_sample_incoming_draws_num_neighbors_real_edges_from_high_degree_targets():
    targets = torch.tensor([0, 4, 2])
    source, position = sample_incoming(*graph(), targets, num_neighbors=3, generator=gen())
    sampled = by_target(targets.tolist(), source, position)
    assert [sum(c.values()) for c in sampled] == [3, 3, 2]
    for t, c in zip(targets.tolist(), sampled):
        assert set(c) <= set(incoming(t))
    assert sampled[2] == incoming(2)


@pytest.mark.parametrize("targets", [[0, 1, 2, 3, 4, 5, 6, 7], [4, 7, 0, 2], [6, 5, 1]])
def test_sample_incoming_positions_group_edges_by_target_in_given_order(targets):
    num_neighbors = 2
    source, position = sample_incoming(*graph(), torch.tensor(targets), num_neighbors, gen(3))
    assert position.dtype == torch.long
    take = [min(sum(incoming(t).values()), num_neighbors) for t in targets]
    expected = [p for p, k in enumerate(take) for _ in range(k)]
    assert position.tolist() == expected  # grouped, in the order of targets
    for s, p in zip(source.tolist(), position.tolist()):
        assert s in incoming(targets[p])


def test_sample_incoming_draws_neighbours_uniformly_with_replacement():
    rowptr, sources = graph()
    calls, num_neighbors, g = 3000, 4, gen(7)
    counts, repeated = Counter(), 0
    for _ in range(calls):
        source, _ = sample_incoming(rowptr, sources, torch.tensor([0]), num_neighbors, g)
        counts.update(source.tolist())
        repeated += len(set(source.tolist())) < num_neighbors
    draws, p = calls * num_neighbors, 1 / MAX_DEGREE
    assert set(counts) == set(incoming(0))
    sd = (draws * p * (1 - p)) ** 0.5
    for s in incoming(0):
        assert abs(counts[s] - draws * p) < 5 * sd, (s, counts)
    # with replacement, 4 draws out of 5 repeat a neighbour with probability 1 - 24/125
    q = 1 - 24 / 125
    assert abs(repeated - calls * q) < 5 * (calls * q * (1 - q)) ** 0.5


def test_sample_incoming_is_reproducible_from_the_generator_seed():
    rowptr, sources = graph()
    targets = torch.tensor([0, 4, 0, 4, 0, 4])

    def run(seed):
        return sample_incoming(rowptr, sources, targets, 2, gen(seed))

    (a, pa), (b, pb), (c, pc) = run(11), run(11), run(12)
    assert torch.equal(a, b) and torch.equal(pa, pb)
    assert torch.equal(pa, pc) and not torch.equal(a, c)


def check_blocks(nodes, blocks, seeds, num_layers):
    """Shape invariants of ``sample_blocks``; returns the global edges of every block."""
    assert nodes[:len(seeds)].tolist() == seeds
    assert len(set(nodes.tolist())) == len(nodes)
    assert len(blocks) == num_layers
    assert blocks[0][1][0] == len(nodes)  # the first layer reads every node
    assert blocks[-1][1][1] == len(seeds)  # the last layer computes the seeds
    for (_, (_, computed)), (_, (read, _)) in itertools.pairwise(blocks):
        assert computed == read  # a layer's outputs are the next layer's inputs
    edges = []
    for edge_index, (num_read, num_computed) in blocks:
        assert num_computed <= num_read
        assert edge_index.shape[0] == 2 and edge_index.dtype == torch.long
        assert bool((edge_index >= 0).all())
        assert bool((edge_index[0] < num_read).all()) and bool((edge_index[1] < num_computed).all())
        pairs = global_edges(nodes, edge_index)
        assert all(incoming(t)[s] > 0 for s, t in pairs)  # real edges, source -> target
        edges.append(pairs)
    return edges


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("seeds", [[4], [1, 5], [7, 0, 3]])
def test_sample_blocks_with_full_fanout_keeps_every_incoming_edge(seeds, num_layers):
    nodes, blocks = sample_blocks(*graph(), torch.tensor(seeds), MAX_DEGREE, num_layers, gen())
    edges = check_blocks(nodes, blocks, seeds, num_layers)
    for pairs, (_, (_, num_computed)) in zip(edges, blocks):
        computed = set(nodes[:num_computed].tolist())
        assert pairs == sorted((s, t) for s, t in EDGES if t in computed)
    reach = set(seeds)  # every node within num_layers incoming hops of the seeds
    for _ in range(num_layers):
        reach |= {s for s, t in EDGES if t in reach}
    assert set(nodes.tolist()) == reach


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_sample_blocks_caps_the_edges_of_every_computed_node(num_layers):
    seeds, num_neighbors = [0, 4, 2], 2
    for seed in range(5):
        nodes, blocks = sample_blocks(*graph(), torch.tensor(seeds), num_neighbors, num_layers,
                                      gen(seed))
        edges = check_blocks(nodes, blocks, seeds, num_layers)
        for pairs, (_, (_, num_computed)) in zip(edges, blocks):
            per_target = Counter(t for _, t in pairs)
            for t in nodes[:num_computed].tolist():
                degree = sum(incoming(t).values())
                assert per_target[t] == min(degree, num_neighbors)


def test_sample_blocks_is_reproducible_from_the_generator_seed():
    rowptr, sources = graph()
    seeds = torch.tensor([0, 4])
    a_nodes, a = sample_blocks(rowptr, sources, seeds, 2, 2, gen(5))
    b_nodes, b = sample_blocks(rowptr, sources, seeds, 2, 2, gen(5))
    assert torch.equal(a_nodes, b_nodes)
    for (ea, sa), (eb, sb) in zip(a, b):
        assert torch.equal(ea, eb) and sa == sb
