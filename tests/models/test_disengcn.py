"""DisenGCN recommender: the K-factor contract, the training objective, and that it learns."""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from disentangle.data.interactions import InteractionData
from disentangle.data.neighbors import sample_blocks
from disentangle.models.disengcn import (
    DisenGCN,
    DisenGCNConfig,
    _collisions,
    channel_distance_correlation,
)
from disentangle.nn.disen_conv import DisenConv

K, D = 4, 8


pytestmark = pytest.mark.usefixtures("one_thread")


def clustered(num_clusters=4, users_per=15, items_per=10, per_user=6, seed=0):
    """Users of cluster c interact only with items of cluster c; one item per user is held
    out. The last item has no interactions at all."""
    rng = np.random.default_rng(seed)
    users, items, held_out = [], [], []
    for c in range(num_clusters):
        for u in range(c * users_per, (c + 1) * users_per):
            chosen = rng.choice(items_per, per_user + 1, replace=False) + c * items_per
            users += [u] * per_user
            items += list(chosen[:-1])
            held_out.append(chosen[-1])
    num_users, num_items = num_clusters * users_per, num_clusters * items_per + 1
    data = InteractionData(np.array(users), np.array(items), np.arange(num_users),
                           np.arange(num_items))
    return data, np.array(held_out)


def make(data, **kwargs):
    torch.manual_seed(0)
    kwargs = dict({"num_factors": K, "factor_dim": D, "batch_size": 64}, **kwargs)
    return DisenGCN(DisenGCNConfig(**kwargs), data)


def history(data, users):
    rows = data.csr[users.numpy()]
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(rows.indptr),
                                       torch.from_numpy(rows.indices),
                                       torch.from_numpy(rows.data), rows.shape)


@pytest.fixture(scope="module")
def data():
    return clustered()[0]


def test_contract_shapes_and_distributions(data):
    model = make(data).eval()
    users = torch.tensor([0, 5, 59])
    hist = history(data, users)
    items = torch.tensor([[0, 1], [2, 40], [39, 3]])
    assert model.num_factors == K and model.name == "disengcn"
    assert not model.supports_new_users
    assert model.score(users, hist).shape == (3, data.num_items)
    assert model.factor_embeddings(users, hist).shape == (3, K, D)
    assert model.item_factor_embeddings().shape == (data.num_items, K, D)
    for weights in (model.item_factor_weights(), model.user_factor_weights(users, hist),
                    model.explain(users, hist, items)):
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert model.item_factor_weights().shape == (data.num_items, K)
    assert model.user_factor_weights(users, hist).shape == (3, K)
    assert model.explain(users, hist, items).shape == (3, 2, K)


COSINE = {"score": "cosine", "loss": "softmax"}
BIASED = {**COSINE, "item_bias": True}


def with_random_bias(model):
    """``model`` with nonzero item biases (they start at zero), if it has them."""
    if model.item_bias is not None:
        with torch.no_grad():
            model.item_bias.normal_(generator=torch.Generator().manual_seed(5))
    return model


@pytest.mark.parametrize("options", [{}, COSINE, BIASED])
def test_scores_are_inner_products_of_the_factor_embeddings_plus_item_bias(data, options):
    model = with_random_bias(make(data, **options)).eval()
    users = torch.arange(data.num_users)
    u = model.factor_embeddings(users, None)
    i = model.item_factor_embeddings()
    bias = 0.0 if model.item_bias is None else model.item_bias.detach()
    torch.testing.assert_close(model.score(users, None),
                               torch.einsum("bkd,mkd->bm", u, i) + bias)


def test_item_bias_starts_at_zero_and_is_a_parameter(data):
    model = make(data, **BIASED)
    assert torch.equal(model.item_bias, torch.zeros(data.num_items))
    assert any(p is model.item_bias for p in model.parameters())
    assert make(data).item_bias is None


def lightgcn_weights(data, edge_index):
    degree = torch.bincount(edge_index[1], minlength=data.num_users + data.num_items).float()
    return (degree[edge_index[0]] * degree[edge_index[1]]).rsqrt()


@pytest.mark.parametrize("init", ["spectral", "normal"])
def test_embeddings_are_the_last_layer_or_the_mean_of_ego_and_layer_outputs(data, init):
    model = make(data, num_layers=2, init=init, layer_combine="last").eval()
    x = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach()
    n = data.num_users
    users, items = data.edge_index
    edge_index = torch.cat([torch.stack([items + n, users]), torch.stack([users, items + n])], 1)
    weight = lightgcn_weights(data, edge_index)
    conv = DisenConv(K * D, K, iterations=2, tau=model.config.tau,
                     routing_norm=model.config.routing_norm, self_loops="keep",
                     output="linear", fused=False)
    layer1 = conv(x, edge_index, weight)
    layer2 = conv(layer1, edge_index, weight)
    torch.testing.assert_close(model.item_factor_embeddings(), layer2.view(-1, K, D)[n:])
    torch.testing.assert_close(model.factor_embeddings(torch.arange(n), None),
                               layer2.view(-1, K, D)[:n])
    mean = make(data, num_layers=2, init=init, layer_combine="mean").eval()
    expected = torch.stack([x, layer1, layer2]).mean(0).view(-1, K, D)
    torch.testing.assert_close(mean.item_factor_embeddings(), expected[n:])
    torch.testing.assert_close(mean.factor_embeddings(torch.arange(n), None), expected[:n])


def test_spectral_init_puts_each_item_in_its_clusters_channel_and_users_on_their_mixture():
    """On four disjoint user-item clusters the spectral start separates them: every item has
    one nonzero channel, the same for its whole cluster and different between clusters, of
    norm 0.1 sqrt(d); a user's channel k is (s / |N(u)|) times the sum of its items' vectors
    in channel k."""
    data, _ = clustered()
    model = make(data)
    items = model.item_embedding.weight.detach().view(-1, K, D)
    norms = items.norm(dim=-1)[:-1]  # the last item has no interactions: all zero
    assert torch.equal(items[-1], torch.zeros(K, D))
    channel = norms.argmax(1)
    assert ((norms > 0).sum(1) == 1).all()
    torch.testing.assert_close(norms.max(1).values, torch.full((len(norms),), 0.1 * D ** 0.5))
    clusters = torch.arange(len(norms)) // 10
    assert sorted(set(zip(clusters.tolist(), channel.tolist()))) == [
        (c, int(channel[10 * c])) for c in range(4)]
    assert len(set(channel.tolist())) == 4
    users = model.user_embedding.weight.detach().view(-1, K, D)
    expected = torch.zeros_like(users)
    degree = torch.bincount(torch.as_tensor(data.users), minlength=data.num_users)
    for u, i in zip(data.users.tolist(), data.items.tolist()):
        expected[u] += items[i] / degree[u]
    torch.testing.assert_close(users, expected)
    # the first routing sends every edge to its item's channel
    model.eval()
    routing = model._inference()[2]
    assert (routing.argmax(1) == channel[torch.as_tensor(data.items)]).all()
    assert routing.max(1).values.min() > 0.99


def test_spectral_init_follows_the_torch_seed(data):
    torch.manual_seed(3)
    a = DisenGCN(DisenGCNConfig(num_factors=K, factor_dim=D), data)
    torch.manual_seed(3)
    b = DisenGCN(DisenGCNConfig(num_factors=K, factor_dim=D), data)
    assert torch.equal(a.item_embedding.weight, b.item_embedding.weight)


@pytest.mark.parametrize("init", ["spectral", "normal"])
def test_one_factor_is_lightgcn(data, init):
    """K = 1 with ``layer_combine="mean"``: the mean of E, A E and A^2 E with A the
    symmetrically normalised user-item adjacency (LightGCN); ``"last"``: A^2 E."""
    model = make(data, num_factors=1, factor_dim=K * D, num_layers=2, layer_combine="mean",
                 init=init).eval()
    x = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach()
    n, total = data.num_users, data.num_users + data.num_items
    adjacency = torch.zeros(total, total)
    users, items = data.edge_index
    adjacency[users, items + n] = adjacency[items + n, users] = 1.0
    degree = adjacency.sum(1)
    inv_sqrt = torch.where(degree > 0, degree.clamp(min=1).rsqrt(), torch.zeros(()))
    normalised = inv_sqrt[:, None] * adjacency * inv_sqrt[None, :]
    expected = (x + normalised @ x + normalised @ normalised @ x) / 3
    torch.testing.assert_close(model.item_factor_embeddings().flatten(1), expected[n:])
    torch.testing.assert_close(model.factor_embeddings(torch.arange(n), None).flatten(1),
                               expected[:n])
    last = make(data, num_factors=1, factor_dim=K * D, num_layers=2, layer_combine="last",
                init=init).eval()
    torch.testing.assert_close(last.item_factor_embeddings().flatten(1),
                               (normalised @ normalised @ x)[n:])


def test_linear_sampled_layer_is_unbiased_for_the_full_one(data):
    """With one routing iteration the routing does not depend on the sample, and each
    sampled neighbour is scaled by |N(u)| / S: the mean over draws is the full output."""
    model = make(data, iterations=1, init="normal", neighbors=2).double().eval()
    users = torch.arange(data.num_users)
    full = model.factor_embeddings(users, None)
    gen = torch.Generator().manual_seed(0)
    seeds = torch.arange(data.num_users)
    draws = []
    with torch.no_grad():
        for _ in range(2000):
            nodes, blocks = sample_blocks(*model._incoming, seeds, 2, 1, gen)
            draws.append(model._propagate_blocks(nodes, blocks))
    draws = torch.stack(draws)
    error = (draws.mean(0) - full).abs().max()
    assert error < 5 * draws.std(0).max() / math.sqrt(len(draws))
    assert not torch.allclose(draws[0], full)  # each user has 6 items: 2 is a real sample


def test_factor_weights_average_both_directions_of_each_interaction(data):
    model = make(data).eval()
    x = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach()
    n, (users, items) = data.num_users, data.edge_index
    conv = DisenConv(K * D, K, iterations=2, tau=model.config.tau, self_loops="keep",
                     fused=False)
    _, (_, to_users) = conv(x, torch.stack([items + n, users]), return_routing=True)
    _, (_, to_items) = conv(x, torch.stack([users, items + n]), return_routing=True)
    per_edge = (to_users + to_items) / 2
    expected_items = torch.full((data.num_items, K), 1.0 / K)  # the last item has no edges
    for i in range(data.num_items - 1):
        expected_items[i] = per_edge[items == i].mean(0)
    torch.testing.assert_close(model.item_factor_weights(), expected_items)
    for u in (0, 17, 59):
        torch.testing.assert_close(model.user_factor_weights(torch.tensor([u]), None)[0],
                                   per_edge[users == u].mean(0))


@pytest.mark.parametrize("options", [{}, COSINE, BIASED])
def test_explain_splits_the_score_into_positive_factor_parts(data, options):
    """The item bias is no factor's: only the inner product is split."""
    model = with_random_bias(make(data, **options)).eval()
    users, items = torch.tensor([3, 30]), torch.tensor([[1, 2, 40], [30, 31, 0]])
    got = model.explain(users, None, items)
    u, i = model.factor_embeddings(users, None), model.item_factor_embeddings()
    for b in range(2):
        for n in range(3):
            parts = [max(float(u[b, k] @ i[items[b, n], k]), 0.0) for k in range(K)]
            expected = [p / sum(parts) for p in parts] if sum(parts) > 0 else [1 / K] * K
            torch.testing.assert_close(got[b, n], torch.tensor(expected))


def test_explain_is_uniform_when_no_factor_contributes_positively(data):
    model = make(data, layer_combine="mean", init="normal").eval()
    user = model.factor_embeddings(torch.tensor([0]), None)[0]
    # Item 40 has no interactions, so its representation is half its embedding: point every
    # channel against the user's and every factor's part of the score is negative.
    with torch.no_grad():
        model.item_embedding.weight[40] = -user.flatten()
    assert (model.item_factor_embeddings()[40] * user).sum(-1).max() < 0
    torch.testing.assert_close(model.explain(torch.tensor([0]), None, torch.tensor([[40]])),
                               torch.full((1, 1, K), 1.0 / K))


@pytest.mark.parametrize("item_bias", [False, True])
def test_loss_is_bpr_plus_weighted_l2_and_channel_correlation(data, item_bias):
    model = with_random_bias(make(data, reg_weight=0.1, cor_weight=0.5, cor_sample=5,
                                  item_bias=item_bias))
    bias = model.item_bias if item_bias else torch.zeros(data.num_items)
    users, pos, neg = torch.tensor([0, 0, 20]), torch.tensor([1, 3, 12]), torch.tensor([30, 40, 5])
    loss, parts = model.loss((users, pos, neg), step=0)
    with torch.no_grad():
        u_out, i_out = model.embed()
        ego_u, ego_i = model.user_embedding.weight, model.item_embedding.weight
        bprs, sq = [], 0.0
        for u, p, n in zip(users.tolist(), pos.tolist(), neg.tolist()):
            diff = float((u_out[u] * i_out[p]).sum() + bias[p]
                         - (u_out[u] * i_out[n]).sum() - bias[n])
            bprs.append(-math.log(1 / (1 + math.exp(-diff))))
            sq += float(ego_u[u].pow(2).sum() + ego_i[p].pow(2).sum() + ego_i[n].pow(2).sum())
        bpr, reg = np.mean(bprs), 0.5 * sq / 3
        sample = torch.cat([u_out[torch.tensor([0, 20])], i_out[torch.tensor([1, 3, 12])]])
        cor = float(channel_distance_correlation(sample))
    assert parts["bpr"] == pytest.approx(bpr, rel=1e-5)
    assert parts["reg"] == pytest.approx(reg, rel=1e-5)
    assert parts["cor"] == pytest.approx(cor, rel=1e-5)
    assert loss.item() == pytest.approx(bpr + 0.1 * reg + 0.5 * cor, rel=1e-5)


@pytest.mark.parametrize("item_bias", [False, True])
def test_softmax_loss_is_cross_entropy_over_the_shared_negatives(data, item_bias):
    model = with_random_bias(make(data, loss="softmax", softmax_tau=0.5, reg_weight=0.1,
                                  cor_weight=0.0, item_bias=item_bias))
    bias = model.item_bias if item_bias else torch.zeros(data.num_items)
    users, pos = torch.tensor([0, 0, 20]), torch.tensor([1, 3, 12])
    shared = torch.tensor([30, 3, 5, 3, 40])  # item 3 (twice) is the second row's positive
    loss, parts = model.loss((users, pos, shared), step=0)
    with torch.no_grad():
        u_out, i_out = model.embed()
        ego_u, ego_i = model.user_embedding.weight, model.item_embedding.weight
        terms, sq = [], 0.0
        for u, p in zip(users.tolist(), pos.tolist()):
            candidates = [p] + [j for j in shared.tolist() if j != p]
            logits = torch.stack([(u_out[u] * i_out[j]).sum() + bias[j]
                                  for j in candidates]) / 0.5
            terms.append(float(-torch.log_softmax(logits.double(), 0)[0]))
            sq += float(ego_u[u].pow(2).sum() + ego_i[p].pow(2).sum())
    assert parts["softmax"] == pytest.approx(np.mean(terms), rel=1e-5)
    assert parts["reg"] == pytest.approx(0.5 * sq / 3, rel=1e-5)
    assert loss.item() == pytest.approx(np.mean(terms) + 0.1 * 0.5 * sq / 3, rel=1e-5)


def test_softmax_row_whose_negatives_are_all_its_positive_has_zero_loss_and_gradient(data):
    model = make(data, loss="softmax", softmax_tau=0.2, reg_weight=0.0, cor_weight=0.0,
                 item_bias=True)
    loss, parts = model.loss((torch.tensor([4]), torch.tensor([7]), torch.tensor([7, 7])), step=0)
    loss.backward()
    assert parts["softmax"] == 0.0
    assert all(torch.all(p.grad == 0) for p in model.parameters() if p.grad is not None)


def test_collisions_are_every_pair_of_a_negative_equal_to_the_rows_positive():
    generator = torch.Generator().manual_seed(0)
    pos, neg = torch.randint(20, (300,), generator=generator), torch.randint(20, (50,),
                                                                             generator=generator)
    rows, cols = _collisions(pos, neg)
    expected = (neg.unsqueeze(0) == pos.unsqueeze(1)).nonzero().tolist()
    assert sorted(zip(rows.tolist(), cols.tolist())) == sorted(map(tuple, expected))


def test_cosine_score_is_the_cosine_of_the_dot_models_representations(data):
    dot, cosine = make(data).eval(), make(data, **COSINE).eval()
    users = torch.arange(data.num_users)
    u_dot, i_dot = dot.embed()
    expected = F.cosine_similarity(u_dot.flatten(1).unsqueeze(1), i_dot.flatten(1).unsqueeze(0),
                                   dim=-1)
    torch.testing.assert_close(cosine.score(users, None), expected, rtol=1e-5, atol=1e-6)
    # the factor embeddings stay consistent with the scores
    u_cos = cosine.factor_embeddings(users, None)
    assert torch.allclose(u_cos.flatten(1).norm(dim=1), torch.ones(data.num_users))
    assert not torch.allclose(u_dot.flatten(1).norm(dim=1), torch.ones(data.num_users))


def test_softmax_batches_share_uniform_negatives(data):
    model = make(data, loss="softmax", num_negatives=7, batch_size=50)
    batches = list(model.batches(data, torch.Generator().manual_seed(1)))
    assert [len(b[2]) for b in batches] == [7] * 8
    got = sorted(zip(torch.cat([b[0] for b in batches]).tolist(),
                     torch.cat([b[1] for b in batches]).tolist()))
    assert got == sorted(zip(data.users.tolist(), data.items.tolist()))
    many = make(data, loss="softmax", num_negatives=10_000)
    neg = next(many.batches(data, torch.Generator().manual_seed(2)))[2]
    counts = torch.bincount(neg, minlength=data.num_items).float()
    assert counts.min() > 0.5 * counts.mean()


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("variant", [
    {"layer_combine": "last"}, {}, {"item_bias": True}, {"loss": "softmax"}, COSINE,
    BIASED])
def test_sampled_loss_and_gradients_equal_the_full_graph_when_nothing_is_dropped(
        data, layers, variant):
    """With S above every degree, the sampled computation graph is the exact neighbourhood
    of the batch, so the sampled update is the full-graph one; a batch without its sampled
    graph falls back to the full graph."""
    options = dict(num_layers=layers, cor_sample=8, cor_weight=0.5, num_negatives=16,
                   **variant)
    full = make(data, **options).double()
    sampled = make(data, neighbors=1000, **options).double()
    fallback = make(data, neighbors=1000, **options).double()
    batch = next(sampled.batches(data, torch.Generator().manual_seed(0)))
    assert len(batch) == 6
    losses = []
    for model, b in ((full, batch[:3]), (sampled, batch), (fallback, batch[:3])):
        value, parts = with_random_bias(model).loss(b, 0)
        value.backward()
        losses.append(parts)
    assert losses[0] == pytest.approx(losses[1], rel=1e-10) == losses[2]
    for a, b in zip(full.parameters(), sampled.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def test_sampled_batches_read_at_most_S_neighbours_per_node(data):
    model = make(data, num_layers=2, neighbors=2)
    users, pos, neg, nodes, blocks, index = next(
        model.batches(data, torch.Generator().manual_seed(0)))
    assert torch.equal(nodes[index], torch.cat([users, pos + data.num_users,
                                                neg + data.num_users]))
    for edge_index, (num_read, num_computed) in blocks:
        assert edge_index[0].max() < num_read and edge_index[1].max() < num_computed
        assert torch.bincount(edge_index[1]).max() <= 2


def test_correlation_term_is_skipped_when_its_weight_is_zero(data):
    model = make(data, cor_weight=0.0)
    _, parts = model.loss(next(model.batches(data, torch.Generator().manual_seed(0))), 0)
    assert parts["cor"] == 0.0


def dcor_reference(x, y):
    """Sample distance correlation from its definition (Székely, Rizzo & Bakirov, 2007)."""
    def centred(v):
        a = np.linalg.norm(v[:, None] - v[None], axis=-1)
        return a - a.mean(0) - a.mean(1)[:, None] + a.mean()
    a, b = centred(x), centred(y)
    return np.sqrt((a * b).mean()) / np.sqrt(np.sqrt((a * a).mean() * (b * b).mean()))


def test_channel_distance_correlation_matches_its_definition():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, 5, generator=gen, dtype=torch.float64)
    x[:, 2] = x[:, 0] ** 2 + 0.1 * x[:, 2]  # dependent but uncorrelated-ish channel
    # DGCF: the adjacent pairs (k, k+1), summed, over K (K + 1) / 2
    pairs = [(0, 1), (1, 2)]
    expected = sum(dcor_reference(x[:, a].numpy(), x[:, b].numpy()) for a, b in pairs) / 6
    assert float(channel_distance_correlation(x)) == pytest.approx(expected, rel=1e-4)
    same = x[:, :1].expand(40, 2, 5)
    assert float(channel_distance_correlation(same)) == pytest.approx(1 / 3, rel=1e-4)


def test_batches_cover_every_training_edge_once(data):
    model = make(data, batch_size=50)
    batches = list(model.batches(data, torch.Generator().manual_seed(1)))
    assert data.num_interactions == 360
    assert [len(b[0]) for b in batches] == [50] * 7 + [10]
    assert model.num_batches(data) == 8
    users, pos, neg = (torch.cat(parts).numpy() for parts in zip(*batches))
    got = sorted(zip(users.tolist(), pos.tolist()))
    assert got == sorted(zip(data.users.tolist(), data.items.tolist()))
    positives = set(zip(data.users.tolist(), data.items.tolist()))
    assert not any((u, j) in positives for u, j in zip(users.tolist(), neg.tolist()))
    assert ((0 <= neg) & (neg < data.num_items)).all()


def test_batches_are_reproducible_and_differ_between_seeds(data):
    model = make(data)

    def epoch(seed):
        return torch.cat([torch.stack(b) for b in model.batches(
            data, torch.Generator().manual_seed(seed))], dim=1)

    assert torch.equal(epoch(3), epoch(3))
    assert not torch.equal(epoch(3), epoch(4))


def test_negatives_without_rejection_are_uniform_over_all_items(data):
    model = make(data, reject_positives=False, batch_size=10_000)
    neg = torch.cat([next(model.batches(data, torch.Generator().manual_seed(s)))[2]
                     for s in range(30)])
    positives = set(zip(data.users.tolist(), data.items.tolist()))
    users = torch.cat([next(model.batches(data, torch.Generator().manual_seed(s)))[0]
                       for s in range(30)])
    hits = np.mean([(u, j) in positives for u, j in zip(users.tolist(), neg.tolist())])
    assert hits == pytest.approx(6 / data.num_items, abs=0.03)  # 6 positives per user
    counts = torch.bincount(neg, minlength=data.num_items).float()
    assert counts.min() > 0.5 * counts.mean()


def test_eval_cache_is_reused_and_invalidated(data, monkeypatch):
    model = make(data)
    calls = []
    propagate = model._propagate
    monkeypatch.setattr(model, "_propagate", lambda **kw: calls.append(1) or propagate(**kw))
    model.eval()
    first = model.score(torch.tensor([0]), None)
    model.item_factor_weights()
    model.factor_embeddings(torch.tensor([1]), None)
    assert len(calls) == 1
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    loss, _ = model.loss(next(model.batches(data, torch.Generator().manual_seed(0))), 0)
    loss.backward()
    optimizer.step()
    model.eval()
    assert not torch.allclose(model.score(torch.tensor([0]), None), first)
    calls.clear()
    with torch.no_grad():  # an in-place update while in eval mode
        model.item_embedding.weight.mul_(-1)
    model.score(torch.tensor([0]), None)
    model.score(torch.tensor([0]), None)
    assert len(calls) == 1
    model.train()
    model.score(torch.tensor([0]), None)
    model.score(torch.tensor([0]), None)
    assert len(calls) == 3  # training mode never caches


def test_switching_mode_drops_the_cache(data):
    model = make(data).eval()
    before = model.score(torch.tensor([0]), None)
    model.convs[0].tau = 1.0  # not a parameter: only the mode switch makes it visible
    torch.testing.assert_close(model.score(torch.tensor([0]), None), before)
    model.eval()  # already in eval mode: the cache stays
    torch.testing.assert_close(model.score(torch.tensor([0]), None), before)
    assert model.double().score(torch.tensor([0]), None).dtype == torch.float64  # new dtype
    model.float()
    model.train().eval()
    assert not torch.allclose(model.score(torch.tensor([0]), None), before)


def test_gradients_are_finite_and_reach_only_the_batch_neighbourhood(data):
    model = make(data, cor_weight=0.01, layer_combine="last")
    batch = (torch.tensor([0]), torch.tensor([1]), torch.tensor([40]))
    loss, _ = model.loss(batch, 0)
    loss.backward()
    for p in model.parameters():
        assert torch.isfinite(p.grad).all()
    user_grad = model.user_embedding.weight.grad.abs().sum(1)
    item_grad = model.item_embedding.weight.grad.abs().sum(1)
    item_1_users = torch.from_numpy(data.users[data.items == 1])
    user_0_items = torch.from_numpy(data.items[data.users == 0])
    assert (user_grad[item_1_users] > 0).all() and (item_grad[user_0_items] > 0).all()
    # item 40 has no interactions: with the last layer as the representation it scores 0 and
    # gets no gradient; with the mean, its ego embedding is its representation
    assert item_grad[40] == 0
    mean = make(data, cor_weight=0.01, layer_combine="mean")
    mean.loss(batch, 0)[0].backward()
    assert mean.item_embedding.weight.grad[40].abs().sum() > 0
    # One layer and no gradient through the routing: a user in another cluster is neither in
    # the batch nor a neighbour of items 1 or 40, and gets no gradient.
    assert user_grad[59] == 0 and item_grad[35] == 0


def recall_at(model, data, held_out, k=5):
    users = torch.arange(data.num_users)
    scores = model.score(users, None)
    scores[torch.from_numpy(data.users), torch.from_numpy(data.items)] = -np.inf
    top = scores.topk(k, dim=1).indices
    return (top == torch.from_numpy(held_out).unsqueeze(1)).any(1).float().mean().item()


PAPER = {"tau": 1.0, "layer_combine": "mean"}


@pytest.mark.parametrize("options", [{}, {"neighbors": 3}, PAPER,
                                     {"loss": "softmax", "num_negatives": 16, "softmax_tau": 0.2},
                                     # cosine scores from a random start learn slowly with
                                     # the last layer alone (loss -20% in 25 epochs)
                                     {"loss": "softmax", "num_negatives": 16, "softmax_tau": 0.2,
                                      "score": "cosine", **PAPER},
                                     {"loss": "softmax", "num_negatives": 16, "softmax_tau": 0.2,
                                      "score": "cosine", "item_bias": True, **PAPER}])
def test_training_lowers_the_loss_and_beats_random_recall(options):
    data, held_out = clustered()
    # from a random start: the spectral one already separates these clusters (recall 1.0
    # untrained; tests/models/test_disengcn_planted.py trains from it)
    model = make(data, batch_size=128, cor_weight=0.01, **{"init": "normal", **options})
    untrained = recall_at(model.eval(), data, held_out)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(0)
    epoch_loss = []
    for epoch in range(25):
        model.train()
        total = 0.0
        for step, batch in enumerate(model.batches(data, gen)):
            optimizer.zero_grad()
            loss, parts = model.loss(batch, step)
            loss.backward()
            optimizer.step()
            total += parts[model.config.loss]
        epoch_loss.append(total)
    trained = recall_at(model.eval(), data, held_out)
    assert np.mean(epoch_loss[-3:]) < 0.7 * np.mean(epoch_loss[:3])
    chance = 5 / (data.num_items - 6)
    assert trained > 0.6 > 2 * max(untrained, chance)


@pytest.mark.parametrize("field, value", [
    ("num_factors", 0), ("factor_dim", 0), ("num_layers", 0), ("iterations", 0), ("tau", 0.0),
    ("dropout", 1.0), ("dropout", -0.1), ("layer_combine", "sum"), ("routing_norm", "edge"),
    ("batch_size", 0),
    ("reg_weight", -1.0), ("cor_weight", -0.1), ("cor_sample", 1), ("neighbors", -1),
    ("loss", "hinge"), ("num_negatives", 0), ("softmax_tau", 0.0), ("init", "xavier"),
    ("score", "euclidean"), ("score", "cosine"),
])
def test_invalid_config_names_the_field(data, field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        make(data, **{field: value})


def test_batches_refuse_another_catalogue(data):
    other = data.subset_items(np.arange(data.num_items) < 20)
    with pytest.raises(ValueError, match="items"):
        next(make(data).batches(other, torch.Generator()))


def test_repr_names_the_sizes(data):
    assert repr(make(data)) == ("DisenGCN(users=60, items=41, factors=4x8, layers=1, "
                                "iterations=2)")
