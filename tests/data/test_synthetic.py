"""Specifications of :func:`disentangle.data.synthetic.planted`."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.metrics import adjusted_mutual_info_score

from disentangle.data.interactions import InteractionData
from disentangle.data.synthetic import PlantedTruth, planted
from disentangle.metrics.factors import macro_alignment


def cluster_shares(data, item_factor, k):
    """``N x K``: share of each user's items in each planted cluster."""
    counts = np.zeros((data.num_users, k))
    np.add.at(counts, (data.users, item_factor[data.items]), 1)
    return counts / counts.sum(axis=1, keepdims=True)


def test_same_seed_same_data_other_seed_other_data():
    a = planted(300, 120, 4, seed=7)
    b = planted(300, 120, 4, seed=7)
    c = planted(300, 120, 4, seed=8)
    np.testing.assert_array_equal(a.users, b.users)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.item_categories, b.item_categories)
    assert a.num_interactions != c.num_interactions or not np.array_equal(a.items, c.items)


def test_sizes_names_and_metadata():
    data, truth = planted(50, 23, 5, interactions_per_user=6, seed=1, return_truth=True)
    assert isinstance(data, InteractionData) and isinstance(truth, PlantedTruth)
    assert (data.num_users, data.num_items) == (50, 23)
    assert list(data.user_ids[:3]) == ["0", "1", "2"] and data.item_ids[-1] == "22"
    assert data.item_titles[4] == "item 4"
    assert data.category_names == [f"factor {j}" for j in range(5)]
    assert data.item_categories.shape == (23, 5)
    # one-hot of balanced clusters that the item index does not reveal
    np.testing.assert_array_equal(data.item_categories.sum(axis=1), 1)
    np.testing.assert_array_equal(data.item_categories.argmax(axis=1), truth.item_factor)
    sizes = np.bincount(truth.item_factor, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    assert not np.array_equal(truth.item_factor, np.arange(23) % 5)
    assert truth.user_mixture.shape == (50, 5)
    np.testing.assert_allclose(truth.user_mixture.sum(axis=1), 1)


def test_pairs_are_unique_sorted_in_range_and_every_user_has_one():
    data = planted(400, 60, 3, interactions_per_user=30, zipf_exponent=1.5, seed=2)
    keys = data.users * data.num_items + data.items
    assert len(np.unique(keys)) == len(keys)
    assert np.all(np.diff(keys) > 0)
    assert data.items.min() >= 0 and data.items.max() < 60
    assert np.all(data.user_degree() >= 1)
    assert np.all(data.user_degree() <= 60)


def test_interactions_per_user_is_the_mean_number_of_draws():
    # with a large catalogue and no popularity skew almost no draw repeats
    data = planted(3000, 200_000, 4, interactions_per_user=10, zipf_exponent=0, seed=3)
    assert data.user_degree().mean() == pytest.approx(10, abs=0.3)


def test_users_concentrate_on_their_planted_intents():
    k = 8
    pure, truth = planted(1500, 400, k, interactions_per_user=30, purity=1.0,
                          concentration=0.1, seed=4, return_truth=True)
    noise, noise_truth = planted(1500, 400, k, interactions_per_user=30, purity=0.0,
                                 concentration=0.1, seed=4, return_truth=True)
    shares = cluster_shares(pure, truth.item_factor, k)
    uniform = cluster_shares(noise, noise_truth.item_factor, k)
    # peaky users: most items in one cluster, far above the uniform baseline (about 1/K)
    assert shares.max(axis=1).mean() > 0.55
    assert uniform.max(axis=1).mean() < 0.3
    # and the clusters follow each user's mixture (total variation distance)
    tv = 0.5 * np.abs(shares - truth.user_mixture).sum(axis=1).mean()
    tv_noise = 0.5 * np.abs(uniform - noise_truth.user_mixture).sum(axis=1).mean()
    assert tv < 0.2
    assert tv_noise > 0.5


def test_clusters_are_recoverable_from_interactions_alone():
    def recovered_ami(purity):
        data, truth = planted(1200, 240, 6, interactions_per_user=25, purity=purity, seed=5,
                              return_truth=True)
        emb = TruncatedSVD(6, random_state=0).fit_transform(data.csr.T.tocsr())
        emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
        labels = KMeans(6, n_init=4, random_state=0).fit_predict(emb)
        return adjusted_mutual_info_score(truth.item_factor, labels)

    assert recovered_ami(0.9) > 0.9
    assert recovered_ami(0.0) < 0.1


def test_an_oracle_that_knows_the_clusters_aligns_perfectly():
    data = planted(100, 90, 6, seed=6)
    r = macro_alignment(data.item_categories, data.item_categories)
    assert r["ami"] == pytest.approx(1.0) and r["accuracy"] == 1.0 and r["bijection"] == 3


def test_zipf_exponent_skews_popularity_inside_clusters():
    def max_over_median(z):
        data, truth = planted(3000, 800, 4, interactions_per_user=20, zipf_exponent=z, seed=7,
                              return_truth=True)
        pop = data.item_popularity()
        return np.mean([pop[truth.item_factor == c].max() / np.median(pop[truth.item_factor == c])
                        for c in range(4)])

    assert max_over_median(0.0) < 2.0
    assert max_over_median(1.0) > 10.0


def test_about_a_million_interactions_in_one_call():
    data = planted(50_000, 5_000, 10, interactions_per_user=21, seed=8)
    assert 800_000 < data.num_interactions <= 21 * 50_000 * 1.01
    assert data.num_users == 50_000 and data.user_degree().min() >= 1
    keys = data.users * data.num_items + data.items
    assert np.all(np.diff(keys) > 0)


@pytest.mark.parametrize("kwargs, name", [
    ({"num_users": 0}, "num_users"),
    ({"num_items": 3}, "num_items"),
    ({"num_factors": 0}, "num_factors"),
    ({"purity": 1.5}, "purity"),
    ({"concentration": 0.0}, "concentration"),
    ({"interactions_per_user": 0.5}, "interactions_per_user"),
    ({"zipf_exponent": -1.0}, "zipf_exponent"),
])
def test_out_of_range_arguments_are_named(kwargs, name):
    args = {"num_users": 10, "num_items": 20, "num_factors": 4} | kwargs
    with pytest.raises(ValueError, match=name):
        planted(**args)
