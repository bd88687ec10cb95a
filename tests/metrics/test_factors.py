"""Specifications of :mod:`disentangle.metrics.factors`, each checked against an
independent computation (hand-worked numbers, scikit-learn, brute force, or the direct
formula)."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    normalized_mutual_info_score,
)

from disentangle.metrics.factors import (
    bijection_score,
    block_diagonal_score,
    channel_correlation,
    dimension_independence,
    distance_correlation,
    factor_category_matrix,
    factor_distance_correlation,
    factor_report,
    latent_traversal,
    macro_alignment,
    matched_accuracy,
    summarise_categories,
)


def one_hot(labels, n):
    out = np.zeros((len(labels), n))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def soft(labels, k, peak=0.7):
    """Factor weights whose argmax is ``labels``, the rest of the mass spread evenly."""
    w = np.full((len(labels), k), (1 - peak) / (k - 1))
    w[np.arange(len(labels)), labels] = peak
    return w


CATS = np.array([0, 0, 1, 1, 1, 2, 2, 3])  # 8 items, 4 categories


# -- macro ------------------------------------------------------------------------------
def test_perfect_alignment_scores_one_everywhere_and_bijection_three():
    r = macro_alignment(soft(CATS, 4), one_hot(CATS, 4))
    for key in ("nmi", "ami", "ari", "accuracy", "nmi_multilabel", "accuracy_multilabel"):
        assert r[key] == pytest.approx(1.0), key
    assert r["bijection"] == 3
    assert r["num_single_label"] == r["num_labelled"] == 8


def test_permuted_factors_still_align_perfectly():
    perm = np.array([2, 0, 3, 1])
    r = macro_alignment(soft(perm[CATS], 4), torch.tensor(one_hot(CATS, 4)))
    assert r["nmi"] == pytest.approx(1.0) and r["ari"] == pytest.approx(1.0)
    assert r["accuracy"] == pytest.approx(1.0)
    assert r["bijection"] == 3


def test_constant_factor_carries_no_information():
    w = soft(np.zeros(len(CATS), dtype=int), 4)
    r = macro_alignment(w, one_hot(CATS, 4))
    assert r["nmi"] == 0.0 and r["ami"] == pytest.approx(0.0) and r["ari"] == 0.0
    # the one used factor is matched to the largest category (3 of 8 items)
    assert r["accuracy"] == pytest.approx(3 / 8)
    # factors 1..3 have no mass: neither map is one-to-one, and they cannot agree
    assert r["bijection"] == 0


def test_single_label_scores_agree_with_scikit_learn_on_random_data():
    rng = np.random.default_rng(0)
    m, k, c = 300, 5, 4
    w = rng.dirichlet(np.ones(k), size=m)
    cats = (rng.random((m, c)) < 0.35).astype(float)  # some items have 0, 1 or more
    r = macro_alignment(w, cats)
    single = cats.sum(1) == 1
    truth, pred = cats[single].argmax(1), w[single].argmax(1)
    assert r["num_single_label"] == single.sum()
    assert r["num_labelled"] == (cats.sum(1) > 0).sum()
    assert r["nmi"] == pytest.approx(normalized_mutual_info_score(truth, pred))
    assert r["ami"] == pytest.approx(adjusted_mutual_info_score(truth, pred))
    assert r["ari"] == pytest.approx(adjusted_rand_score(truth, pred))


def test_multilabel_scores_equal_single_label_scores_when_every_item_has_one_category():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=200)
    w = rng.dirichlet(np.ones(6), size=200)
    r = macro_alignment(w, one_hot(labels, 4))
    assert r["nmi_multilabel"] == pytest.approx(r["nmi"])
    assert r["accuracy_multilabel"] == pytest.approx(r["accuracy"])


def test_multilabel_items_count_with_weight_one_over_their_categories():
    # items 0,1 -> factor 0, category a; item 2 -> factor 1, categories a and b;
    # item 3 -> factor 1, category b. Table (factor x cat): [[2, 0], [0.5, 1.5]].
    w = soft(np.array([0, 0, 1, 1]), 2, peak=0.9)
    cats = np.array([[1, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    r = macro_alignment(w, cats)
    assert r["accuracy_multilabel"] == pytest.approx((2 + 1.5) / 4)
    p = np.array([[2, 0], [0.5, 1.5]]) / 4
    pr, pc = p.sum(1), p.sum(0)
    nz = p > 0
    mi = np.sum(p[nz] * np.log(p[nz] / np.outer(pr, pc)[nz]))
    h = lambda q: -np.sum(q * np.log(q))
    assert r["nmi_multilabel"] == pytest.approx(mi / ((h(pr) + h(pc)) / 2))
    # the single-label scores only see items 0, 1 and 3: a perfect split
    assert r["num_single_label"] == 3 and r["accuracy"] == pytest.approx(1.0)


def test_items_without_categories_do_not_change_any_score():
    rng = np.random.default_rng(2)
    w = rng.dirichlet(np.ones(3), size=50)
    cats = one_hot(rng.integers(0, 3, size=50), 3)
    base = macro_alignment(w, cats)
    w_more = np.vstack([w, rng.dirichlet(np.ones(3), size=20)])
    cats_more = np.vstack([cats, np.zeros((20, 3))])
    assert macro_alignment(w_more, cats_more) == pytest.approx(base)


def test_no_labelled_items_gives_nan_not_an_error():
    r = macro_alignment(np.full((3, 2), 0.5), np.zeros((3, 2)))
    assert math.isnan(r["nmi"]) and math.isnan(r["bijection"]) and r["num_labelled"] == 0


def brute_force_accuracy(truth, pred):
    classes, clusters = np.unique(truth), np.unique(pred)
    best = 0
    if len(clusters) <= len(classes):
        for image in itertools.permutations(classes, len(clusters)):
            mapping = dict(zip(clusters, image))
            best = max(best, sum(mapping[p] == t for p, t in zip(pred, truth)))
    else:
        for image in itertools.permutations(clusters, len(classes)):
            mapping = dict(zip(image, classes))
            best = max(best, sum(mapping.get(p) == t for p, t in zip(pred, truth)))
    return best / len(truth)


@pytest.mark.parametrize("k,c,seed", [(4, 4, 0), (3, 5, 1), (5, 3, 2), (4, 4, 3)])
def test_matched_accuracy_equals_brute_force_over_all_matchings(k, c, seed):
    rng = np.random.default_rng(seed)
    truth, pred = rng.integers(0, c, size=40), rng.integers(0, k, size=40)
    assert matched_accuracy(truth, pred) == pytest.approx(brute_force_accuracy(truth, pred))


def test_factor_category_matrix_spreads_each_item_over_its_categories():
    w = np.array([[1.0, 0.0], [0.25, 0.75], [0.5, 0.5]])
    cats = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]])  # item 2 unlabelled
    raw = factor_category_matrix(w, cats, normalize=None)
    np.testing.assert_allclose(raw, [[1.0, 0.125, 0.125], [0.0, 0.375, 0.375]])
    np.testing.assert_allclose(factor_category_matrix(w, cats), raw / 2)
    np.testing.assert_allclose(factor_category_matrix(w, cats, normalize="factor").sum(1), 1)
    np.testing.assert_allclose(factor_category_matrix(w, cats, normalize="category").sum(0), 1)
    with pytest.raises(ValueError, match="normalize"):
        factor_category_matrix(w, cats, normalize="rows")


def test_bijection_score_counts_each_property_separately():
    assert bijection_score(np.eye(3) + 0.1) == 3
    assert bijection_score(np.eye(3)[[2, 0, 1]]) == 3  # a permutation is a bijection
    # factors 0 and 1 both prefer category 0; categories prefer factors 0, 2, 2
    m = np.array([[0.9, 0.1, 0.0], [0.8, 0.3, 0.1], [0.0, 0.5, 0.6]])
    assert bijection_score(m) == 0
    # best categories of the factors (0, 1, 2) are one-to-one; best factors of the
    # categories (0, 0, 2) are not, so the maps cannot agree either
    m = np.array([[0.9, 0.8, 0.0], [0.1, 0.2, 0.0], [0.0, 0.0, 0.5]])
    assert bijection_score(m) == 1
    assert bijection_score(m.T) == 1
    # more factors than categories: at most the category -> factor map is one-to-one
    assert bijection_score(np.vstack([np.eye(2), [[0.1, 0.0]]])) == 1
    # a factor without mass has no best category
    assert bijection_score(np.diag([1.0, 1.0, 0.0])) == 0


def test_two_one_to_one_maps_always_agree_without_ties():
    # the exchange argument in the docstring: a score of 2 needs ties
    rng = np.random.default_rng(10)
    scores = {bijection_score(rng.random((3, 3)) ** 4 + np.eye(3)[rng.permutation(3)] * 0.3)
              for _ in range(500)}
    assert 2 not in scores and {0, 1, 3} <= scores


# -- independence -----------------------------------------------------------------------
def test_channel_correlation_is_absolute_pearson_in_channel_major_order():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(200, 3, 2))
    emb[:, 2, 1] = -2 * emb[:, 0, 0]
    emb[:, 1, 0] = 1.0  # constant
    corr = channel_correlation(torch.tensor(emb))
    assert corr.shape == (6, 6)
    assert corr[0, 5] == pytest.approx(1.0)
    assert np.all(corr[2] == 0) and np.all(corr[:, 2] == 0)
    ref = np.abs(np.corrcoef(emb[:, 0, 1], emb[:, 1, 1])[0, 1])
    assert corr[1, 3] == pytest.approx(ref)


def test_block_diagonal_score_on_a_constructed_block_matrix():
    k, d = 3, 4
    corr = np.full((k * d, k * d), 0.1)
    for b in range(k):
        corr[b * d:(b + 1) * d, b * d:(b + 1) * d] = 0.8
    np.fill_diagonal(corr, 1.0)
    assert block_diagonal_score(corr, k) == pytest.approx(0.7)
    # the same matrix read with the wrong K is less block-diagonal
    assert block_diagonal_score(corr, 2) < 0.7
    with pytest.raises(ValueError, match="d >= 2"):
        block_diagonal_score(np.eye(3), 3)


def slow_dcor(x, y):
    """The defining formula of Székely et al. (2007), dCov² = S1 + S2 - 2 S3."""
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    n = len(x)
    ax = np.array([[np.linalg.norm(x[i] - x[j]) for j in range(n)] for i in range(n)])
    by = np.array([[np.linalg.norm(y[i] - y[j]) for j in range(n)] for i in range(n)])

    def dcov2(a, b):
        s1 = (a * b).sum() / n ** 2
        s2 = a.sum() / n ** 2 * b.sum() / n ** 2
        s3 = sum(a[i, l] * b[j, l] for i in range(n) for j in range(n) for l in range(n)) / n ** 3
        return s1 + s2 - 2 * s3

    return math.sqrt(dcov2(ax, by) / math.sqrt(dcov2(ax, ax) * dcov2(by, by)))


def test_distance_correlation_matches_the_defining_formula():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(25, 2))
    y = np.c_[np.sin(x[:, 0]) + 0.3 * rng.normal(size=25), rng.normal(size=25)]
    assert distance_correlation(x, y) == pytest.approx(slow_dcor(x, y), rel=1e-10)


def test_distance_correlation_of_identical_vs_independent_variables():
    rng = np.random.default_rng(5)
    x = rng.normal(size=1000)
    assert distance_correlation(x, x) == pytest.approx(1.0)
    assert distance_correlation(x, 3 * x - 2) == pytest.approx(1.0)
    assert distance_correlation(x, rng.normal(size=1000)) < 0.1
    # nonlinear dependence Pearson misses
    assert abs(np.corrcoef(x, x ** 2)[0, 1]) < 0.15 and distance_correlation(x, x ** 2) > 0.3
    assert distance_correlation(x, np.ones(1000)) == 0.0


def test_distance_correlation_subsamples_reproducibly():
    rng = np.random.default_rng(6)
    x = rng.normal(size=3000)
    y = x + rng.normal(size=3000)
    a = distance_correlation(x, y, max_samples=500, seed=1)
    assert a == distance_correlation(x, y, max_samples=500, seed=1)
    assert a != distance_correlation(x, y, max_samples=500, seed=2)
    assert a == pytest.approx(distance_correlation(x, y, max_samples=None), abs=0.05)


def test_factor_distance_correlation_is_the_mean_over_channel_pairs():
    rng = np.random.default_rng(7)
    emb = rng.normal(size=(300, 3, 2))
    emb[:, 2] = np.tanh(emb[:, 0]) ** 2
    pairs = [distance_correlation(emb[:, i], emb[:, j]) for i, j in [(0, 1), (0, 2), (1, 2)]]
    assert factor_distance_correlation(emb) == pytest.approx(np.mean(pairs))
    independent = factor_distance_correlation(rng.normal(size=(300, 3, 2)))
    assert independent < 0.15 < factor_distance_correlation(emb)


# -- micro --------------------------------------------------------------------------------
def test_dimension_independence_averages_within_factor_correlations():
    rng = np.random.default_rng(8)
    emb = rng.normal(size=(2000, 2, 3))
    assert dimension_independence(emb) < 0.05
    emb[:, 0, 1] = emb[:, 0, 0]
    emb[:, 0, 2] = -emb[:, 0, 0]
    # factor 0: three pairs of |corr| 1; factor 1: three pairs near 0
    assert dimension_independence(emb) == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="d=1"):
        dimension_independence(np.zeros((5, 2, 1)))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_latent_traversal_finds_items_a_linear_decoder_ties_to_the_dimension(as_tensor):
    rng = np.random.default_rng(9)
    b, k, d, m = 4, 3, 2, 30
    weight = rng.normal(size=(k * d, m))

    def decode(z):
        if as_tensor:
            return z.reshape(len(z), -1) @ torch.tensor(weight)
        return z.reshape(len(z), -1) @ weight

    z = rng.normal(size=(b, k, d))
    z_in = torch.tensor(z) if as_tensor else z
    t = latent_traversal(decode, z_in, factor=1, dim=0, values=[2.0, -1.0], top=5, mode="shift")
    row = weight[1 * d + 0]
    assert t["rising"].shape == t["falling"].shape == (2, b, 5)
    # +2 along the dimension raises exactly the items with the largest weights, in order
    np.testing.assert_array_equal(t["rising"][0, 0], np.argsort(-row)[:5])
    np.testing.assert_array_equal(t["falling"][0, 0], np.argsort(row)[:5])
    # -1 reverses the roles
    np.testing.assert_array_equal(t["rising"][1, 3], np.argsort(row)[:5])
    np.testing.assert_allclose(t["delta"][0], np.tile(2.0 * row, (b, 1)))
    np.testing.assert_allclose(np.asarray(z_in), z)  # the caller's latents are untouched

    t = latent_traversal(decode, z_in, factor=1, dim=0, values=[5.0], mode="set")
    np.testing.assert_allclose(t["delta"][0], np.outer(5.0 - z[:, 1, 0], row))


def test_summarise_categories_shares_multilabel_items():
    cats = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    shares = summarise_categories(np.array([[0, 2], [1, 3]]), cats)
    np.testing.assert_allclose(shares, [[0.75, 0.25], [0.0, 0.5]])


# -- report -------------------------------------------------------------------------------
class OracleModel(torch.nn.Module):
    """A fake K-factor model whose item factors are the planted categories."""

    def __init__(self, cats, k, d, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.num_factors = k
        self.weights = torch.tensor(soft(cats, k))
        self.items = torch.randn(len(cats), k, d, generator=g)
        self.users = torch.randn(50, k, d, generator=g)

    def item_factor_weights(self):
        return self.weights

    def item_factor_embeddings(self):
        return self.items

    def factor_embeddings(self, users, history):
        return self.users[users]


def test_factor_report_is_complete_json_and_restores_train_mode():
    cats = np.repeat(np.arange(4), 25)

    class Data:
        item_categories = one_hot(cats, 4)

    model = OracleModel(cats, 4, 3)
    model.train()
    report = factor_report(model, Data(), torch.arange(50), None, max_samples=100)
    assert model.training
    json.dumps(report, allow_nan=False)
    assert report["num_factors"] == 4
    assert report["macro/ami"] == pytest.approx(1.0) and report["macro/bijection"] == 3
    for who in ("items", "users"):
        for key in ("corr_within", "corr_across", "block_diagonal", "dcor",
                    "dimension_correlation"):
            assert isinstance(report[f"{who}/{key}"], float), (who, key)
        assert report[f"{who}/dcor"] < 0.5  # random Gaussian channels
