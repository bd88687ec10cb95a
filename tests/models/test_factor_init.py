"""disentangle.models.factor_init: the spectral embedding against a dense SVD of the
normalised matrix, and block recovery on hand-made block matrices."""
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from disentangle.models.factor_init import (
    spectral_factors,
    spectral_item_embedding,
    spherical_kmeans,
)


def block_matrix(k: int, users_per_block: int, items_per_block: int, noise: float, seed: int):
    """Users of block b interact with every item of block b, plus random noise entries;
    returns (N x M matrix, the items' blocks)."""
    rng = np.random.default_rng(seed)
    user_block = np.repeat(np.arange(k), users_per_block)
    item_block = np.repeat(np.arange(k), items_per_block)
    x = (user_block[:, None] == item_block[None, :]).astype(float)
    x = np.maximum(x, rng.random(x.shape) < noise)
    perm = rng.permutation(len(item_block))  # item order says nothing of the block
    return x[:, perm], item_block[perm]


def test_embedding_is_the_svd_of_the_degree_normalised_matrix():
    rng = np.random.default_rng(0)
    x = (rng.random((30, 20)) < 0.3).astype(float)
    x[:, 3] = 0  # an item nobody has: degree clamped at 1, its vector zero
    items, vectors = spectral_item_embedding(sp.csr_matrix(x), dim=5, seed=0)
    du, di = np.maximum(x.sum(1), 1), np.maximum(x.sum(0), 1)
    _, s, vt = np.linalg.svd(x / np.sqrt(du)[:, None] / np.sqrt(di)[None, :])
    assert items.shape == (20, 5) and vectors.shape == (20, 5)
    np.testing.assert_allclose(np.linalg.norm(items, axis=0), s[:5], rtol=1e-6)
    # same singular subspace up to sign: |cos| of matching columns is 1
    np.testing.assert_allclose(np.abs((vectors * vt[:5].T).sum(0)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(s[0], 1.0, rtol=1e-9)  # the trivial pair
    np.testing.assert_allclose(items[3], 0.0, atol=1e-12)


def test_embedding_pads_with_zero_columns_beyond_the_rank():
    x = sp.csr_matrix(np.eye(4)[:3])  # 3 x 4: at most 3 singular pairs
    items, vectors = spectral_item_embedding(x, dim=6, seed=0)
    assert items.shape == (4, 6) and vectors.shape == (4, 3)
    assert not items[:, 3:].any()


@pytest.mark.parametrize("k", [2, 4, 7])
def test_clusters_recover_the_blocks_of_a_noisy_block_matrix(k):
    x, blocks = block_matrix(k, users_per_block=20, items_per_block=15, noise=0.1, seed=k)
    start = spectral_factors(sp.csr_matrix(x), dim=32, num_factors=k, seed=0)
    assert adjusted_mutual_info_score(blocks, start.labels) == pytest.approx(1.0)
    # each item starts closest to the prototype of its own cluster
    cos = start.items @ start.prototypes.T
    np.testing.assert_array_equal(cos.argmax(1), start.labels)
    np.testing.assert_allclose(np.linalg.norm(start.prototypes, axis=1), 1.0)
    assert start.items.shape == (k * 15, 32) and start.prototypes.shape == (k, 32)


def test_more_factors_than_blocks_split_blocks_rather_than_mixing_them():
    x, blocks = block_matrix(3, users_per_block=20, items_per_block=15, noise=0.05, seed=1)
    labels = spectral_factors(sp.csr_matrix(x), dim=16, num_factors=5, seed=0).labels
    assert len(np.unique(labels)) == 5
    # purity: the share of items in their cluster's majority block (random labels: ~0.4)
    purity = contingency_matrix(blocks, labels).max(axis=0).sum() / len(blocks)
    assert purity >= 0.9


def test_repeated_rows_leave_no_prototype_undefined():
    x = sp.csr_matrix(np.ones((4, 6)))  # every item the same: one distinct row
    start = spectral_factors(x, dim=3, num_factors=3, seed=0)
    np.testing.assert_allclose(np.linalg.norm(start.prototypes, axis=1), 1.0)


def test_same_seed_same_result():
    x, _ = block_matrix(3, 10, 10, noise=0.2, seed=0)
    a = spectral_factors(sp.csr_matrix(x), dim=8, num_factors=3, seed=5)
    b = spectral_factors(sp.csr_matrix(x), dim=8, num_factors=3, seed=5)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.prototypes, b.prototypes)


def test_spherical_kmeans_clusters_by_direction_not_length():
    directions = np.array([[1.0, 0.0], [0.0, 1.0]])
    lengths = np.array([0.1, 1.0, 10.0])
    rows = np.concatenate([d * lengths[:, None] for d in directions])
    labels = spherical_kmeans(rows, 2, seed=0)
    assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]


@pytest.mark.parametrize("bad", [0, 5])
def test_spherical_kmeans_refuses_k_out_of_range(bad):
    with pytest.raises(ValueError, match="num_clusters"):
        spherical_kmeans(np.eye(4), bad)


def test_embedding_refuses_dim_below_one():
    with pytest.raises(ValueError, match="dim"):
        spectral_item_embedding(np.eye(3), 0)
