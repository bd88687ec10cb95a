"""DisenConv against a slow per-node, per-edge, per-factor transcription of DisenGCN's routing."""
import pytest
import torch

from disentangle.nn.disen_conv import DisenConv

K, D = 3, 4
KERNELS = [pytest.param(True, id="fused"), pytest.param(False, id="gather")]


pytestmark = pytest.mark.usefixtures("one_thread")


def unit(v):
    return v / v.norm().clamp(min=1e-12)


def reference(x_src, x_dst, edges, iterations, tau, frozen=False, linear_weights=None,
              node=False):
    """DisenGCN's neighbourhood routing, one node, one edge and one factor at a time.

    Returns the output rows (list of K-lists of d-vectors) and the routing weights of the last
    iteration (one K-list per edge). With ``frozen``, every routing weight is computed from a
    detached copy of the inputs, so gradients pass only through the final weighted sum. With
    ``linear_weights`` (one weight per edge), the last aggregation is ``output="linear"``'s:
    the weighted sum of the raw neighbour channels, without self term or normalisation.
    With ``node`` (``routing_norm="node"``), every node's K channels (inputs and centres) are
    divided by the norm of all K together instead of one by one.
    """
    def scale(channels):
        if node:
            norm = torch.cat(channels).norm().clamp(min=1e-12)
            return [ch / norm for ch in channels]
        return [unit(ch) for ch in channels]

    def factors(x):
        return [scale([x[n, k * D:(k + 1) * D] for k in range(K)]) for n in range(x.size(0))]

    z_src, z_dst = factors(x_src), factors(x_dst)
    if frozen:
        z_src_r, z_dst_r = factors(x_src.detach()), factors(x_dst.detach())
    else:
        z_src_r, z_dst_r = z_src, z_dst
    c = [list(z) for z in z_dst_r]
    for t in range(iterations):
        routing = []
        for v, u in edges:
            scores = [torch.dot(z_src_r[v][k], c[u][k]) / tau for k in range(K)]
            top = max(float(s.detach()) for s in scores)
            exps = [torch.exp(s - top) for s in scores]
            routing.append([e / sum(exps) for e in exps])
        last = t == iterations - 1
        zs, zd = (z_src, z_dst) if last else (z_src_r, z_dst_r)
        if last and linear_weights is not None:
            zs = [[x_src[n, k * D:(k + 1) * D] for k in range(K)] for n in range(x_src.size(0))]
        new_c = []
        for u in range(len(z_dst)):
            channels = []
            for k in range(K):
                if last and linear_weights is not None:
                    acc = torch.zeros(D, dtype=x_src.dtype)
                    for (v, target), p, w in zip(edges, routing, linear_weights):
                        if target == u:
                            acc = acc + w * p[k] * zs[v][k]
                    channels.append(acc)
                    continue
                acc = zd[u][k]
                for (v, target), p in zip(edges, routing):
                    if target == u:
                        acc = acc + p[k] * zs[v][k]
                channels.append(acc)
            new_c.append(channels if last and linear_weights is not None else scale(channels))
        c = new_c
    out = torch.stack([torch.cat(channels) for channels in c])
    weights = torch.stack([torch.stack([torch.as_tensor(p) for p in ps]) for ps in routing])
    return out, weights


def tiny_graph():
    # Directed edges (source, target); node 4 has no in-edges, node 2 two, node 0 three.
    edges = [(1, 0), (2, 0), (3, 0), (0, 1), (3, 2), (4, 2), (2, 3), (0, 3), (1, 4)]
    return edges, torch.tensor(edges).t()


@pytest.fixture
def x():
    return torch.randn(5, K * D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("fused", KERNELS)
@pytest.mark.parametrize("iterations", [1, 2, 4])
@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_output_and_routing_match_the_per_node_reference(x, fused, iterations, tau):
    edges, edge_index = tiny_graph()
    conv = DisenConv(K * D, K, iterations=iterations, tau=tau, fused=fused)
    out, (used, routing) = conv(x, edge_index, return_routing=True)
    ref_out, ref_routing = reference(x, x, edges, iterations, tau)
    assert torch.equal(used, edge_index)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(routing, ref_routing)


@pytest.mark.parametrize("fused", KERNELS)
@pytest.mark.parametrize("iterations", [1, 3])
@pytest.mark.parametrize("linear", [False, True])
def test_node_routing_norm_matches_the_per_node_reference(x, fused, iterations, linear):
    edges, edge_index = tiny_graph()
    x = x.clone()
    x[:, :D] *= 0.01  # a near-zero channel: per-node scaling keeps it small, per-channel not
    weights = torch.rand(len(edges), generator=torch.Generator().manual_seed(2),
                         dtype=x.dtype) if linear else None
    conv = DisenConv(K * D, K, iterations=iterations, tau=0.3, routing_norm="node", fused=fused,
                     output="linear" if linear else "normalized")
    out, (_, routing) = conv(x, edge_index, weights, return_routing=True)
    ref_out, ref_routing = reference(x, x, edges, iterations, 0.3, linear_weights=weights,
                                     node=True)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(routing, ref_routing)
    # the near-zero channel's direction hardly moves the routing with node scaling; with
    # DisenGCN's per-channel scaling, which ignores its size, it decides it
    flipped = x.clone()
    flipped[:, :D] = flipped[:, :D].flip(0)
    _, (_, routing_flipped) = conv(flipped, edge_index, weights, return_routing=True)
    channel = DisenConv(K * D, K, iterations=iterations, tau=0.3, fused=fused)
    per_channel = channel(x, edge_index, return_routing=True)[1][1]
    per_channel_flipped = channel(flipped, edge_index, return_routing=True)[1][1]
    assert (routing - routing_flipped).abs().max() < 0.01
    assert (per_channel - per_channel_flipped).abs().max() > 0.1


@pytest.mark.parametrize("fused", KERNELS)
@pytest.mark.parametrize("iterations", [1, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_linear_output_matches_the_per_node_reference(x, fused, iterations, weighted):
    edges, edge_index = tiny_graph()
    weights = torch.linspace(0.5, 2.0, len(edges), dtype=torch.float64)
    conv = DisenConv(K * D, K, iterations=iterations, tau=0.5, output="linear", fused=fused)
    out, (_, routing) = conv(x, edge_index, weights if weighted else None, return_routing=True)
    ref_out, ref_routing = reference(x, x, edges, iterations, 0.5,
                                     linear_weights=weights if weighted else [1.0] * len(edges))
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(routing, ref_routing)

    grad = input_grad(x)
    got = grad(lambda xg: conv(xg, edge_index, weights if weighted else None))
    frozen = grad(lambda xg: reference(
        xg, xg, edges, iterations, 0.5, frozen=True,
        linear_weights=weights if weighted else [1.0] * len(edges))[0])
    torch.testing.assert_close(got, frozen)


@pytest.mark.parametrize("fused", KERNELS)
def test_edge_weights_are_constants_cast_to_the_features(x, fused):
    edges, edge_index = tiny_graph()
    conv = DisenConv(K * D, K, output="linear", fused=fused)
    weights = torch.linspace(0.5, 2.0, len(edges), dtype=torch.float64, requires_grad=True)
    features = x.float().requires_grad_()
    out = conv(features, edge_index, weights)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, conv(x, edge_index, weights).float())
    out.sum().backward()
    assert weights.grad is None and features.grad is not None
    with pytest.raises(ValueError, match="one value per edge"):
        conv(x, edge_index, weights[:-1])


@pytest.mark.parametrize("fused", KERNELS)
def test_linear_output_with_one_factor_is_a_lightgcn_layer(x, fused):
    """K = 1: every routing weight is one, so the layer is D^-1/2 A D^-1/2 X."""
    edges, edge_index = tiny_graph()
    in_degree = torch.bincount(edge_index[1], minlength=5).double()
    out_degree = torch.bincount(edge_index[0], minlength=5).double()
    weight = (out_degree[edge_index[0]] * in_degree[edge_index[1]]).rsqrt()
    adjacency = torch.zeros(5, 5, dtype=torch.float64)
    for (v, u), w in zip(edges, weight.tolist()):
        adjacency[u, v] = w
    conv = DisenConv(K * D, 1, iterations=2, output="linear", fused=fused)
    torch.testing.assert_close(conv(x, edge_index, weight), adjacency @ x)


@pytest.mark.parametrize("fused", KERNELS)
def test_linear_output_weights_follow_self_loop_handling(x, fused):
    edges, edge_index = tiny_graph()
    loops = torch.tensor([[0, 2], [0, 2]])
    with_loops = torch.cat([edge_index, loops], dim=1)
    weights = torch.linspace(0.5, 2.0, len(edges) + 2, dtype=torch.float64)
    removed = DisenConv(K * D, K, output="linear", fused=fused)(x, with_loops, weights)
    plain = DisenConv(K * D, K, output="linear", fused=fused)(x, edge_index, weights[:-2])
    torch.testing.assert_close(removed, plain)
    added = DisenConv(K * D, K, output="linear", self_loops="add", fused=fused)
    every_loop = torch.arange(5).repeat(2, 1)
    expected = DisenConv(K * D, K, output="linear", self_loops="keep", fused=fused)(
        x, torch.cat([edge_index, every_loop], 1),
        torch.cat([weights[:-2], torch.ones(5, dtype=torch.float64)]))
    torch.testing.assert_close(added(x, with_loops, weights), expected)


def bipartite_graph():
    """4 source and 3 target nodes; (0, 0) is an ordinary edge between the two node sets,
    not a self-loop."""
    gen = torch.Generator().manual_seed(2)
    x_src = torch.randn(4, K * D, generator=gen, dtype=torch.float64)
    x_dst = torch.randn(3, K * D, generator=gen, dtype=torch.float64)
    return x_src, x_dst, [(0, 0), (1, 0), (3, 1), (2, 1), (0, 1), (3, 2)]


@pytest.mark.parametrize("fused", KERNELS)
def test_linear_bipartite_input_matches_the_reference(fused):
    x_src, x_dst, edges = bipartite_graph()
    weights = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.25, 3.0], dtype=torch.float64)
    conv = DisenConv(K * D, K, iterations=2, output="linear", fused=fused)
    out = conv((x_src, x_dst), torch.tensor(edges).t(), weights)
    ref_out, _ = reference(x_src, x_dst, edges, 2, 1.0, linear_weights=weights)
    torch.testing.assert_close(out, ref_out)


@pytest.mark.parametrize("fused", KERNELS)
def test_more_iterations_change_the_result(x, fused):
    _, edge_index = tiny_graph()
    one = DisenConv(K * D, K, iterations=1, fused=fused)(x, edge_index)
    three = DisenConv(K * D, K, iterations=3, fused=fused)(x, edge_index)
    assert not torch.allclose(one, three)


@pytest.mark.parametrize("fused", KERNELS)
def test_routing_rows_are_distributions_over_factors(x, fused):
    _, edge_index = tiny_graph()
    _, (_, routing) = DisenConv(K * D, K, fused=fused)(x, edge_index, return_routing=True)
    assert routing.shape == (edge_index.size(1), K)
    assert (routing >= 0).all()
    torch.testing.assert_close(routing.sum(-1), torch.ones(edge_index.size(1), dtype=x.dtype))


@pytest.mark.parametrize("fused", KERNELS)
def test_every_output_factor_has_unit_length(x, fused):
    _, edge_index = tiny_graph()
    out = DisenConv(K * D, K, fused=fused)(x, edge_index)
    norms = out.view(-1, K, D).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_a_node_without_neighbours_keeps_its_normalised_input(x):
    _, edge_index = tiny_graph()
    keep = edge_index[1] != 4
    out = DisenConv(K * D, K)(x, edge_index[:, keep])
    torch.testing.assert_close(out[4].view(K, D), torch.nn.functional.normalize(
        x[4].view(K, D), dim=-1))


def input_grad(x):
    """``grad(fn)``: the gradient at ``x`` of a fixed random linear read-out of ``fn(x)``."""
    weight = torch.randn(5, K * D, generator=torch.Generator().manual_seed(1), dtype=x.dtype)

    def grad(fn):
        xg = x.clone().requires_grad_()
        (fn(xg) * weight).sum().backward()
        return xg.grad
    return grad


@pytest.mark.parametrize("fused", KERNELS)
@pytest.mark.parametrize("iterations", [1, 3])
def test_gradient_flows_only_through_the_final_aggregation(x, fused, iterations):
    edges, edge_index = tiny_graph()
    grad = input_grad(x)

    conv = DisenConv(K * D, K, iterations=iterations, fused=fused)
    got = grad(lambda xg: conv(xg, edge_index))
    frozen = grad(lambda xg: reference(xg, xg, edges, iterations, 1.0, frozen=True)[0])
    through_routing = grad(lambda xg: reference(xg, xg, edges, iterations, 1.0)[0])
    torch.testing.assert_close(got, frozen)
    assert not torch.allclose(got, through_routing)


@pytest.mark.parametrize("fused", KERNELS)
def test_permuting_nodes_permutes_outputs_and_keeps_edge_routing(x, fused):
    _, edge_index = tiny_graph()
    perm = torch.tensor([3, 0, 4, 1, 2])  # new node i is old node perm[i]
    new_of_old = torch.empty_like(perm)
    new_of_old[perm] = torch.arange(5)
    edge_perm = torch.tensor([5, 2, 8, 0, 7, 1, 3, 6, 4])
    conv = DisenConv(K * D, K, iterations=3, fused=fused)
    out, (_, routing) = conv(x, edge_index, return_routing=True)
    out_p, (_, routing_p) = conv(x[perm], new_of_old[edge_index][:, edge_perm],
                                 return_routing=True)
    torch.testing.assert_close(out_p, out[perm])
    torch.testing.assert_close(routing_p, routing[edge_perm])


@pytest.mark.parametrize("fused", KERNELS)
def test_bipartite_input_matches_the_reference_with_separate_node_sets(fused):
    x_src, x_dst, edges = bipartite_graph()
    conv = DisenConv(K * D, K, iterations=2, fused=fused)
    out, (_, routing) = conv((x_src, x_dst), torch.tensor(edges).t(), return_routing=True)
    ref_out, ref_routing = reference(x_src, x_dst, edges, 2, 1.0)
    assert out.shape == (3, K * D)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(routing, ref_routing)


@pytest.mark.parametrize("fused", KERNELS)
def test_bipartite_equals_homogeneous_on_the_union_of_node_sets(fused):
    gen = torch.Generator().manual_seed(3)
    x_src = torch.randn(4, K * D, generator=gen)
    x_dst = torch.randn(3, K * D, generator=gen)
    edge_index = torch.tensor([[0, 1, 3, 2, 0, 3], [0, 0, 1, 1, 1, 2]])
    conv = DisenConv(K * D, K, iterations=3, fused=fused)
    bip = conv((x_src, x_dst), edge_index)
    union = conv(torch.cat([x_src, x_dst]), edge_index + torch.tensor([[0], [4]]))
    torch.testing.assert_close(bip, union[4:])


@pytest.mark.parametrize("fused", KERNELS)
def test_explicit_self_loops_are_removed_kept_or_added(x, fused):
    edges, edge_index = tiny_graph()
    loops = torch.tensor([[0, 2], [0, 2]])
    with_loops = torch.cat([edge_index, loops], dim=1)

    def run(mode, ei):
        return DisenConv(K * D, K, iterations=2, self_loops=mode, fused=fused)(
            x, ei, return_routing=True)

    removed, (used, _) = run("remove", with_loops)
    torch.testing.assert_close(removed, reference(x, x, edges, 2, 1.0)[0])
    assert used.size(1) == len(edges)
    kept, _ = run("keep", with_loops)
    all_loops = edges + [(0, 0), (2, 2)]
    torch.testing.assert_close(kept, reference(x, x, all_loops, 2, 1.0)[0])
    added, (used, _) = run("add", with_loops)
    every_node = edges + [(n, n) for n in range(5)]
    torch.testing.assert_close(added, reference(x, x, every_node, 2, 1.0)[0])
    assert used.size(1) == len(every_node)


def test_self_loops_cannot_be_added_to_bipartite_inputs(x):
    with pytest.raises(ValueError, match="bipartite"):
        DisenConv(K * D, K, self_loops="add")((x, x[:2]), torch.tensor([[0], [1]]))


@pytest.mark.parametrize("fused", KERNELS)
def test_projection_applies_the_linear_map_and_activation_first(fused):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 7, generator=gen)
    edges, edge_index = tiny_graph()
    conv = DisenConv(K * D, K, in_channels=7, iterations=2, fused=fused)
    projected = torch.relu(x @ conv.lin.weight.t() + conv.lin.bias)
    torch.testing.assert_close(conv(x, edge_index), reference(projected, projected, edges, 2,
                                                              1.0)[0])
    assert conv.lin.weight.requires_grad


@pytest.mark.parametrize("fused", KERNELS)
def test_dropout_acts_only_in_training(x, fused):
    _, edge_index = tiny_graph()
    plain = DisenConv(K * D, K, fused=fused)(x, edge_index)
    conv = DisenConv(K * D, K, dropout=0.5, fused=fused)
    torch.testing.assert_close(conv.eval()(x, edge_index), plain)
    torch.manual_seed(0)
    assert not torch.allclose(conv.train()(x, edge_index), plain)


def test_cached_structure_gives_the_same_result_and_is_reused(x):
    _, edge_index = tiny_graph()
    conv = DisenConv(K * D, K, cached=True)
    first = conv(x, edge_index)
    torch.testing.assert_close(conv(x, edge_index), first)
    cached = conv._cached_graph
    conv(x, edge_index)
    assert conv._cached_graph is cached
    # Another edge_index tensor (e.g. a sampled subgraph), even of the same size, is used.
    fewer = edge_index[:, :3]
    torch.testing.assert_close(conv(x, fewer), DisenConv(K * D, K)(x, fewer))
    assert conv._cached_graph is not cached
    # Modified in place: rebuilt.
    edited = edge_index.clone()
    conv(x, edited)
    edited[0, 0] = 4
    torch.testing.assert_close(conv(x, edited), DisenConv(K * D, K)(x, edited))
    conv.reset_parameters()
    assert conv._cached_graph is None


def test_empty_graph_normalises_the_input(x):
    for fused in (True, False):
        out = DisenConv(K * D, K, fused=fused)(x, torch.empty(2, 0, dtype=torch.long))
        torch.testing.assert_close(out.view(-1, K, D),
                                   torch.nn.functional.normalize(x.view(-1, K, D), dim=-1))
        linear = DisenConv(K * D, K, output="linear", fused=fused)
        assert torch.equal(linear(x, torch.empty(2, 0, dtype=torch.long)), torch.zeros_like(x))


@pytest.mark.parametrize("kwargs, name", [
    ({"channels": 12, "num_factors": 5}, "channels"),
    ({"channels": 12, "num_factors": 0}, "num_factors"),
    ({"channels": 12, "num_factors": 3, "iterations": 0}, "iterations"),
    ({"channels": 12, "num_factors": 3, "tau": 0.0}, "tau"),
    ({"channels": 12, "num_factors": 3, "dropout": 1.0}, "dropout"),
    ({"channels": 12, "num_factors": 3, "self_loops": "twice"}, "self_loops"),
    ({"channels": 12, "num_factors": 3, "output": "sum"}, "output"),
    ({"channels": 12, "num_factors": 3, "routing_norm": "edge"}, "routing_norm"),
    ({"channels": 12, "num_factors": 3, "act": "tanh"}, "act"),
    ({"channels": 12, "num_factors": 3, "cached": True, "fused": False}, "cached"),
])
def test_invalid_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DisenConv(**kwargs)


@pytest.mark.parametrize("fused", KERNELS)
def test_edge_weights_are_refused_by_the_normalised_output(x, fused):
    _, edge_index = tiny_graph()
    with pytest.raises(ValueError, match="edge_weight is only used by output='linear'"):
        DisenConv(K * D, K, fused=fused)(x, edge_index, torch.ones(edge_index.size(1)))


def test_wrong_feature_size_is_reported(x):
    with pytest.raises(ValueError, match=r"\(N, 24\), got \(5, 12\)"):
        DisenConv(24, K)(x, tiny_graph()[1])


def test_repr_names_the_sizes():
    assert repr(DisenConv(64, 4, iterations=2)) == \
        "DisenConv(64, num_factors=4, iterations=2, tau=1.0)"
    assert repr(DisenConv(64, 4, output="linear")) == \
        "DisenConv(64, num_factors=4, iterations=3, tau=1.0, output='linear')"
