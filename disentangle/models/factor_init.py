r"""Data-driven starting points for K-factor models: item vectors from a spectral embedding
of the training interactions, and factor prototypes from spherical k-means of those vectors.

Why: a factor model whose item→factor assignment starts from random prototypes has nothing
to break the symmetry between factors. With a soft assignment every factor sees nearly the
same input and the assignment's gradient vanishes; with a sharp one the random initial
partition freezes (MacridVAE on planted data: AMI ~0.0 from a random start, 1.0 when the
prototypes start on the planted clusters). Starting the item table and the prototypes from
the co-occurrence structure of the training data puts the factors on the data's clusters
before the first update.

**Spectral item embedding.** With :math:`\mathbf{X}` the ``N x M`` user–item matrix of the
training data (entries as given, usually 1) and :math:`\mathbf{D}_U`, :math:`\mathbf{D}_I`
its diagonal user and item degrees (clamped at 1, so empty rows and columns stay zero), the
normalised matrix and its truncated SVD are

.. math::
    \tilde{\mathbf{X}} = \mathbf{D}_U^{-1/2}\, \mathbf{X}\, \mathbf{D}_I^{-1/2}
        \approx \mathbf{U}_r \mathbf{S}_r \mathbf{V}_r^\top,
    \qquad r = \min(d, N, M),

(the bipartite graph's normalised adjacency, as in spectral co-clustering, Dhillon 2001).
Item :math:`i`'s vector is row :math:`i` of :math:`\mathbf{V}_r \mathbf{S}_r`, padded with
zeros to :math:`d` columns. The first singular pair is the trivial one
(:math:`\mathbf{v}_1 \propto \mathbf{D}_I^{1/2}\mathbf{1}`, :math:`s_1 = 1`); it is kept, as
the row normalisation below removes its scale.

**Clusters.** As in Ng, Jordan and Weiss's spectral clustering, the items are clustered on
the first :math:`K` right singular vectors with each row scaled to unit length,
:math:`\mathbf{y}_i = \mathbf{V}_{i,1:K} / \|\mathbf{V}_{i,1:K}\|_2`, by k-means
(scikit-learn's :class:`~sklearn.cluster.KMeans`; on unit rows, squared Euclidean distance
is :math:`2 - 2\cos`, so this is spherical k-means up to the centroid normalisation).
(Clustering the unit rows of the whole :math:`d = 100` embedding instead did as well on
clean planted data and slightly worse on noisy, popularity-skewed data: mean AMI of the
k-means labels 0.84 against 0.87 over the purity-0.7 planted cells.)

**Prototypes.** Prototype :math:`k` is the normalised mean of the unit item vectors of
cluster :math:`k`, in the :math:`d`-dimensional item space:
:math:`\mathbf{m}_k \propto \sum_{i \in C_k} \mathbf{e}_i / \|\mathbf{e}_i\|_2`, with
:math:`\mathbf{e}_i` row :math:`i` of the item embedding.

API (NumPy in, NumPy out; deterministic for a given ``seed``):

* :func:`spectral_item_embedding` — ``M x d`` item vectors and the singular vectors;
* :func:`spherical_kmeans` — cluster labels of unit rows;
* :func:`spectral_factors` — both steps, returning a :class:`FactorInit` (item vectors,
  unit prototypes, item labels), which is what a model's initialisation calls. A cluster
  k-means leaves empty (only possible when rows repeat) gets a random unit prototype.

A model copies these into its parameters at its own scale (cosine-based models only see
directions).
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.extmath import randomized_svd

__all__ = ["FactorInit", "spectral_factors", "spectral_item_embedding", "spherical_kmeans"]


@dataclasses.dataclass(frozen=True)
class FactorInit:
    """The output of :func:`spectral_factors`.

    Attributes:
        items: ``M x d`` item vectors :math:`\\mathbf{V}_r\\mathbf{S}_r` (zero-padded).
        prototypes: ``K x d`` unit prototypes, in the item vectors' space.
        labels: ``M`` ints, each item's cluster (the prototype it starts closest to).
    """

    items: np.ndarray
    prototypes: np.ndarray
    labels: np.ndarray


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def spectral_item_embedding(interactions: sp.spmatrix | ArrayLike, dim: int, seed: int = 0
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors from the truncated SVD of the degree-normalised interaction matrix.

    Args:
        interactions: ``N x M`` user–item matrix (SciPy sparse or dense).
        dim: ``d >= 1``, the number of columns returned.
        seed: seed of the randomised SVD (:func:`sklearn.utils.extmath.randomized_svd`).

    Returns:
        ``(items, vectors)``: the ``M x d`` float64 embedding :math:`\\mathbf{V}_r
        \\mathbf{S}_r` (columns ``r..d-1`` zero) and the ``M x r`` right singular vectors
        :math:`\\mathbf{V}_r`, singular values in decreasing order.
    """
    if dim < 1:
        raise ValueError(f"dim={dim!r} is out of range: expected an integer >= 1")
    x = sp.csr_matrix(interactions, dtype=np.float64)
    du = np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1.0)
    di = np.maximum(np.asarray(x.sum(axis=0)).ravel(), 1.0)
    xn = sp.diags(du ** -0.5) @ x @ sp.diags(di ** -0.5)
    r = min(dim, *x.shape)
    _, s, vt = randomized_svd(xn, r, random_state=seed)
    items = np.zeros((x.shape[1], dim))
    items[:, :r] = vt.T * s
    return items, vt.T


def spherical_kmeans(vectors: ArrayLike, num_clusters: int, seed: int = 0,
                     n_init: int = 10) -> np.ndarray:
    """Labels of k-means on the rows of ``vectors`` scaled to unit length (zero rows stay
    zero).

    Args:
        vectors: ``M x d`` array.
        num_clusters: ``K``, at most the number of rows.
        seed: seed of :class:`sklearn.cluster.KMeans`.
        n_init: k-means restarts (the best inertia is kept).

    Returns:
        ``M`` ints in ``[0, K)``.
    """
    y = _unit_rows(np.asarray(vectors, dtype=np.float64))
    if not 1 <= num_clusters <= len(y):
        raise ValueError(f"num_clusters={num_clusters!r} is out of range: expected an integer "
                         f"in [1, {len(y)}] (the number of rows)")
    with warnings.catch_warnings():
        # repeated rows can leave fewer distinct clusters than K; spectral_factors handles it
        warnings.simplefilter("ignore", ConvergenceWarning)
        return KMeans(num_clusters, n_init=n_init, random_state=seed).fit(y).labels_


def spectral_factors(interactions: sp.spmatrix | ArrayLike, dim: int, num_factors: int,
                     seed: int = 0) -> FactorInit:
    """Item vectors, prototypes and item clusters for a ``K``-factor model (module
    docstring: spectral embedding, k-means on the first ``K`` unit-scaled singular
    vectors, prototypes as normalised cluster means of the unit item vectors).

    Args:
        interactions: ``N x M`` training user–item matrix.
        dim: ``d``, the dimension of the item vectors and prototypes.
        num_factors: ``K``, the number of prototypes.
        seed: seeds the SVD and k-means.
    """
    items, vectors = spectral_item_embedding(interactions, dim, seed)
    labels = spherical_kmeans(vectors[:, :num_factors], num_factors, seed)
    unit = _unit_rows(items)
    prototypes = np.zeros((num_factors, dim))
    np.add.at(prototypes, labels, unit)
    # k-means leaves a cluster empty only when rows repeat (tiny data): a random direction
    empty = np.bincount(labels, minlength=num_factors) == 0
    prototypes[empty] = np.random.default_rng(seed).standard_normal((int(empty.sum()), dim))
    return FactorInit(items=items, prototypes=_unit_rows(prototypes), labels=labels)
