"""The ranking-only baselines pinned against slow, dense references on tiny matrices, their
gradients checked numerically, and each one learning on the embedded ml-latest-small."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from disentangle.config import ConfigError, resolve
from disentangle.data.interactions import InteractionData
from disentangle.metrics.ranking import evaluate, popularity_scorer
from disentangle.models import MODELS, FactorRecommender
from disentangle.models.baselines import (
    BPR,
    EASE,
    BPRConfig,
    EASEConfig,
    ItemKNN,
    ItemKNNConfig,
    LightGCN,
    LightGCNConfig,
    MultDAE,
    MultDAEConfig,
    MultVAE,
    MultVAEConfig,
)
from disentangle.models.recommender import (
    ClosedFormRecommender,
    NoFactorsError,
    Recommender,
    require_factors,
)
from disentangle.train.run import build_split
from disentangle.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

BASELINES = ("ease", "itemknn", "bpr", "multvae", "multdae", "lightgcn")


def data_from(dense) -> InteractionData:
    users, items = np.nonzero(np.asarray(dense))
    return InteractionData(users, items, np.arange(dense.shape[0]), np.arange(dense.shape[1]))


def random_binary(n, m, seed, p=0.45):
    x = (np.random.default_rng(seed).random((n, m)) < p).astype(np.float64)
    x[np.arange(n), np.arange(n) % m] = 1.0  # no empty user
    return x


def csr(x):
    return torch.as_tensor(x, dtype=torch.float32).to_sparse_csr()


# -- the contract ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", BASELINES)
def test_baselines_are_registered_ranking_models_without_factors(name):
    cls = MODELS[name]
    assert issubclass(cls, Recommender) and not issubclass(cls, FactorRecommender)
    model = cls(cls.Config(), data_from(random_binary(6, 5, 0)))
    with pytest.raises(NoFactorsError, match=f"'{name}' is a ranking-only baseline"):
        require_factors(model, "the report")


def test_require_factors_returns_a_factor_model():
    model = MODELS["macridvae"](MODELS["macridvae"].Config(num_factors=2, dim=3),
                                data_from(random_binary(6, 5, 0)))
    assert require_factors(model, "the report") is model


@pytest.mark.parametrize("name", ["ease", "itemknn"])
def test_closed_form_models_train_one_epoch_and_refuse_batches(name):
    assert resolve(name).train.epochs == 1
    model = MODELS[name](MODELS[name].Config(), data_from(random_binary(6, 5, 0)))
    assert isinstance(model, ClosedFormRecommender) and model.num_batches(None) == 0
    assert all(not p.requires_grad for p in model.parameters())
    with pytest.raises(TypeError, match="closed form"):
        model.batches(None, torch.Generator())
    with pytest.raises(TypeError, match="closed form"):
        model.loss(None, 0)


@pytest.mark.parametrize("name, key, value", [
    ("ease", "lam", 0), ("itemknn", "k", 0), ("itemknn", "shrink", -1), ("bpr", "dim", 0),
    ("multvae", "dims", []), ("multvae", "anneal_steps", 0), ("multdae", "dropout", 1),
    ("lightgcn", "num_layers", -1)])
def test_a_bad_config_value_is_one_line_naming_it(name, key, value):
    with pytest.raises(ConfigError, match=rf"^model\.{key}=\S+ is out of range: expected"):
        resolve(name, overrides=[f"model.{key}={value}"])


def test_pairwise_models_default_to_the_ratio_protocol_and_recall_at_20():
    for name in ("bpr", "lightgcn"):
        cfg = resolve(name)
        assert (cfg.data.protocol, cfg.train.select) == ("ratio", "recall@20")
        assert not MODELS[name].supports_new_users
    assert all(MODELS[n].supports_new_users for n in ("ease", "itemknn", "multvae", "multdae"))


# -- EASE -------------------------------------------------------------------------------------
def ease_reference(x, lam):
    """Column by column: b_j = argmin ||x_j - X b||^2 + lam ||b||^2 subject to b_j = 0, solved
    as a ridge regression on the other columns."""
    m = x.shape[1]
    b = np.zeros((m, m))
    for j in range(m):
        rest = [i for i in range(m) if i != j]
        a = x[:, rest]
        b[rest, j] = np.linalg.solve(a.T @ a + lam * np.eye(m - 1), a.T @ x[:, j])
    return b


@pytest.mark.parametrize("n, m", [(9, 5), (4, 9)], ids=["items-solve", "woodbury"])
def test_ease_is_the_constrained_ridge_solution_with_zero_diagonal(n, m):
    x = random_binary(n, m, seed=n)
    model = EASE(EASEConfig(lam=3.0), data_from(x))
    model.fit_closed_form(data_from(x))
    b = model.weight.double().numpy()
    np.testing.assert_allclose(b, ease_reference(x, 3.0), rtol=1e-5, atol=1e-6)
    assert np.all(np.diag(b) == 0)
    hist = x[:2]
    np.testing.assert_allclose(model.score(None, csr(hist)).numpy(), hist @ b, rtol=1e-5,
                               atol=1e-6)


def test_ease_refuses_another_catalogue():
    model = EASE(EASEConfig(), data_from(random_binary(4, 5, 0)))
    with pytest.raises(ValueError, match="train has 6 items, the model 5"):
        model.fit_closed_form(data_from(random_binary(4, 6, 0)))


# -- ItemKNN ----------------------------------------------------------------------------------
# 5 users x 4 items; item counts 3, 3, 3, 2; co-counts (0,1)=2, (0,2)=1, (0,3)=1, (1,2)=2,
# (1,3)=0, (2,3)=1. With shrink h=1: s01 = s12 = 2/(3+1) = a, s02 = 1/(3+1),
# s03 = s23 = 1/(sqrt(6)+1) = b, s13 = 0.
KNN_X = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 1, 1]], float)


def test_itemknn_keeps_the_k_most_similar_items_by_shrunk_cosine():
    model = ItemKNN(ItemKNNConfig(k=2, shrink=1.0), data_from(KNN_X))
    model.fit_closed_form(data_from(KNN_X))
    a, b = 2 / 4, 1 / (math.sqrt(6) + 1)
    # row i: the similarities of its two neighbours (item 1 has a tie-free top two: 0 and 2)
    expected = np.array([[0, a, 0, b], [a, 0, a, 0], [0, a, 0, b], [b, 0, b, 0]])
    got = np.zeros((4, 4))
    for i in range(4):
        got[i, model.neighbors[i].numpy()] = model.similarity[i].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # a user who saw items 0 and 3 gets row 0 + row 3
    scores = model.score(None, csr([[1, 0, 0, 1], [0, 0, 0, 0]]))
    np.testing.assert_allclose(scores.numpy(), [[b, a, b, b], [0, 0, 0, 0]], rtol=1e-6)


def test_itemknn_without_pruning_scores_the_history_times_the_similarity_matrix():
    x = random_binary(12, 7, seed=3)
    model = ItemKNN(ItemKNNConfig(k=6, shrink=2.0), data_from(x))
    model.fit_closed_form(data_from(x))
    norms = np.sqrt(x.sum(0))
    sim = x.T @ x / (norms[:, None] * norms[None, :] + 2.0)
    np.fill_diagonal(sim, 0.0)
    np.testing.assert_allclose(model.score(None, csr(x)).numpy(), x @ sim, rtol=1e-5, atol=1e-6)


# -- BPR --------------------------------------------------------------------------------------
def test_bpr_loss_is_log_sigmoid_of_score_differences_plus_l2_over_the_batch():
    x = random_binary(5, 6, seed=1)
    torch.manual_seed(0)
    model = BPR(BPRConfig(dim=3, reg=0.1), data_from(x)).double()
    users, pos, neg = torch.tensor([0, 1, 1, 4]), torch.tensor([2, 0, 3, 5]), \
        torch.tensor([1, 1, 4, 0])
    loss, _ = model.loss((users, pos, neg), 0)
    p, q = model.user_embedding.weight, model.item_embedding.weight
    expected = 0.0
    for u, i, j in zip(users.tolist(), pos.tolist(), neg.tolist()):
        expected -= math.log(1 / (1 + math.exp(-(p[u] @ q[i] - p[u] @ q[j]).item()))) / 4
        expected += 0.1 * (p[u].square().sum() + q[i].square().sum()
                           + q[j].square().sum()).item() / 4
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert torch.allclose(model.score(torch.tensor([1, 3]), None), p[[1, 3]] @ q.T)


@pytest.mark.parametrize("cls, cfg", [(BPR, BPRConfig(batch_size=3)),
                                      (LightGCN, LightGCNConfig(batch_size=3))])
def test_pair_batches_cover_every_pair_once_with_non_interacted_negatives(cls, cfg):
    x = random_binary(6, 8, seed=2)
    data = data_from(x)
    model = cls(cfg, data)
    batches = list(model.batches(data, torch.Generator().manual_seed(0)))
    assert len(batches) == model.num_batches(data)
    users, pos, neg = (torch.cat(t) for t in zip(*batches))
    assert sorted(zip(users.tolist(), pos.tolist())) == sorted(zip(data.users, data.items))
    assert not x[users.numpy(), neg.numpy()].any()


# -- Mult-VAE / Mult-DAE ----------------------------------------------------------------------
AE_X = torch.tensor([[1., 0., 1., 1., 0., 0.],
                     [0., 1., 0., 0., 1., 1.],
                     [1., 1., 0., 0., 0., 1.]], dtype=torch.float64)


def make_ae(cls, cfg_cls, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = cfg_cls(**{"dims": [4, 3], **kw})
    return cls(cfg, data_from(AE_X.numpy())).double()


def dense_forward(model, x, eps=None):
    """Dense reference: encoder and decoder as explicit matrix products on the full rows."""
    h = x / x.norm(dim=1, keepdim=True)
    h = h @ model.input_table + model.input_bias
    for lin in model.encoder:
        h = torch.tanh(h) @ lin.weight.T + lin.bias
    d = model.latent_dim
    if model.variational:
        mu, logvar = h[:, :d], h[:, d:]
        z = mu if eps is None else mu + eps * torch.exp(0.5 * logvar)
    else:
        mu = logvar = None
        z = torch.tanh(h)
    for i, lin in enumerate(model.decoder):
        z = (z if i == 0 else torch.tanh(z)) @ lin.weight.T + lin.bias
    return z, mu, logvar


def dense_loss(model, x, step, eps=None):
    logits, mu, logvar = dense_forward(model, x, eps)
    logp = logits - torch.log(torch.exp(logits).sum(1, keepdim=True))
    loss = -(x * logp).sum() / x.shape[0]
    if model.variational:
        kl = 0.5 * (-logvar + torch.exp(logvar) + mu ** 2 - 1).sum() / x.shape[0]
        loss = loss + min(model.config.beta, step / model.config.anneal_steps) * kl
    weights = [model.input_table] + [lin.weight for lin in (*model.encoder, *model.decoder)]
    return loss + model.config.reg * sum((w ** 2).sum() for w in weights)


@pytest.mark.parametrize("cls, cfg_cls", [(MultVAE, MultVAEConfig), (MultDAE, MultDAEConfig)])
@pytest.mark.parametrize("dims", [[4, 3], [3]])
def test_autoencoder_loss_and_scores_match_the_dense_reference(cls, cfg_cls, dims):
    model = make_ae(cls, cfg_cls, dims=dims, reg=0.01, anneal_steps=10) \
        if cls is MultVAE else make_ae(cls, cfg_cls, dims=dims, reg=0.01)
    model.eval()
    loss, _ = model.loss(AE_X.to_sparse_csr(), 1)
    assert loss.item() == pytest.approx(dense_loss(model, AE_X, 1).item(), rel=1e-10)
    torch.testing.assert_close(model.score(None, AE_X.to_sparse_csr()),
                               dense_forward(model, AE_X)[0])


def test_vae_training_loss_decodes_a_reparameterised_sample_and_anneals_the_kl():
    model = make_ae(MultVAE, MultVAEConfig, dropout=0.0, beta=0.3, anneal_steps=100).train()
    for step in (0, 20, 100):
        torch.manual_seed(7)
        loss, parts = model.loss(AE_X.to_sparse_csr(), step)
        torch.manual_seed(7)
        eps = torch.randn(3, model.latent_dim, dtype=torch.float64)
        assert parts["anneal"] == min(0.3, step / 100)
        assert loss.item() == pytest.approx(dense_loss(model, AE_X, step, eps).item(), rel=1e-10)


def test_autoencoder_dropout_acts_on_the_input_in_training_only():
    model = make_ae(MultDAE, MultDAEConfig, dropout=0.5)
    sp = AE_X.to_sparse_csr()
    torch.testing.assert_close(model.encode(sp), model.encode(sp))
    outs = {tuple(model.encode(sp, train=True).flatten().tolist()) for _ in range(5)}
    assert len(outs) > 1


# -- LightGCN ---------------------------------------------------------------------------------
def lightgcn_reference(x, e0, num_layers):
    """Dense: symmetric-normalised bipartite adjacency, layer mean, user-item inner products."""
    n, m = x.shape
    a = torch.zeros(n + m, n + m, dtype=torch.float64)
    a[:n, n:], a[n:, :n] = x, x.T
    deg = a.sum(1)
    norm = torch.where(deg > 0, deg.rsqrt(), 0.0)
    a_hat = norm[:, None] * a * norm[None, :]
    layers, e = [e0], e0
    for _ in range(num_layers):
        e = a_hat @ e
        layers.append(e)
    out = torch.stack(layers).mean(0)
    return out[:n] @ out[n:].T


def test_lightgcn_scores_are_the_dense_propagation_and_pygs_link_ranks():
    x = torch.as_tensor(random_binary(5, 7, seed=4))
    torch.manual_seed(0)
    model = LightGCN(LightGCNConfig(dim=4, num_layers=2), data_from(x.numpy())).double()
    with torch.no_grad():
        scores = model.score(torch.arange(5), None)
        ref = lightgcn_reference(x, model.model.embedding.weight, 2)
        torch.testing.assert_close(scores, ref)
        pairs = torch.cartesian_prod(torch.arange(5), torch.arange(7) + 5).T
        torch.testing.assert_close(model.model(model.edge_index, pairs).view(5, 7), ref)


def test_lightgcn_loss_is_bpr_on_propagated_scores_plus_l2_on_distinct_ego_nodes():
    x = torch.as_tensor(random_binary(5, 7, seed=4))
    torch.manual_seed(0)
    model = LightGCN(LightGCNConfig(dim=4, num_layers=2, reg=0.1), data_from(x.numpy())).double()
    users, pos, neg = torch.tensor([0, 0, 3]), torch.tensor([1, 2, 6]), torch.tensor([4, 4, 0])
    loss, _ = model.loss((users, pos, neg), 0)
    e0 = model.model.embedding.weight
    s = lightgcn_reference(x, e0, 2)
    diff = s[users, pos] - s[users, neg]
    nodes = torch.tensor(sorted(set(users.tolist()) | {5 + i for i in (pos.tolist()
                                                                         + neg.tolist())}))
    expected = -F.logsigmoid(diff).mean() + 0.1 * e0[nodes].square().sum() / 3
    # PyG builds the layer weights 1/(L+1) in float32, hence not 1e-10
    assert loss.item() == pytest.approx(expected.item(), rel=1e-7)


def test_lightgcn_eval_cache_follows_the_parameters():
    x = random_binary(5, 7, seed=4)
    model = LightGCN(LightGCNConfig(dim=4), data_from(x))
    with torch.no_grad():
        before = model.score(torch.arange(5), None).clone()
        model.model.embedding.weight.mul_(2)
        after = model.score(torch.arange(5), None)
    torch.testing.assert_close(after, 4 * before)


# -- gradients --------------------------------------------------------------------------------
def gradient_models():
    x = random_binary(4, 5, seed=5)
    data = data_from(x)
    torch.manual_seed(0)
    triple = (torch.tensor([0, 1, 3]), torch.tensor([0, 1, 3]), torch.tensor([2, 4, 1]))
    rows = torch.as_tensor(x).to_sparse_csr()
    return [
        (BPR(BPRConfig(dim=2, reg=0.1), data), triple),
        (LightGCN(LightGCNConfig(dim=2, num_layers=2, reg=0.1), data), triple),
        (MultVAE(MultVAEConfig(dims=[3, 2], reg=0.1), data), rows),
        (MultDAE(MultDAEConfig(dims=[3, 2], reg=0.1), data), rows),
    ]


class LossOf(torch.nn.Module):
    """``forward()`` is ``model.loss(batch, step)``, so ``functional_call`` can vary the
    model's parameters."""

    def __init__(self, model, batch):
        super().__init__()
        self.model, self.batch = model, batch

    def forward(self):
        return self.model.loss(self.batch, 3)[0]


@pytest.mark.parametrize("index", range(4), ids=["bpr", "lightgcn", "multvae", "multdae"])
def test_loss_gradients_match_finite_differences(index):
    model, batch = gradient_models()[index]
    wrapper = LossOf(model.double().eval(), batch)  # eval: no dropout, no sample
    names = [n for n, _ in wrapper.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in wrapper.named_parameters())
    assert torch.autograd.gradcheck(
        lambda *values: functional_call(wrapper, dict(zip(names, values)), ()), params)


# -- learning on real data --------------------------------------------------------------------
@pytest.fixture(scope="module")
def splits():
    cache = {}

    def get(protocol):
        if protocol not in cache:
            cache[protocol] = build_split(resolve("ease", overrides=[
                f"data.protocol={protocol}"]))
        return cache[protocol]
    return get


@pytest.mark.parametrize("name, overrides, metric", [
    ("ease", [], "ndcg@100"),
    ("itemknn", [], "ndcg@100"),
    ("multvae", ["model.dims=[200,50]", "model.batch_size=50", "train.lr=1e-2",
                 "train.epochs=10", "train.eval_every=10"], "ndcg@100"),
    ("multdae", ["model.dims=[200,50]", "model.batch_size=50", "train.lr=1e-2",
                 "train.epochs=10", "train.eval_every=10"], "ndcg@100"),
    ("bpr", ["train.lr=1e-2", "train.epochs=10", "train.eval_every=10"], "recall@20"),
    ("lightgcn", ["model.dim=32", "model.num_layers=2", "model.batch_size=4096",
                  "train.lr=5e-2", "train.epochs=8", "train.eval_every=8"], "recall@20"),
])
def test_baseline_beats_popularity_on_the_embedded_dataset(splits, name, overrides, metric):
    cfg = resolve(name, overrides=overrides)
    split = splits(cfg.data.protocol)
    torch.manual_seed(cfg.train.seed)
    model = MODELS[name](cfg.model, split.train)
    if isinstance(model, ClosedFormRecommender):
        model.fit_closed_form(split.train)
    else:
        Trainer(model, split, cfg.train, progress=False).fit()
    model.eval()
    with torch.no_grad():
        ours = evaluate(model.score, split.test, cfg.train.ks)[metric]
    pop = evaluate(popularity_scorer(split.train), split.test, cfg.train.ks)[metric]
    assert ours > 1.3 * pop, (ours, pop)
