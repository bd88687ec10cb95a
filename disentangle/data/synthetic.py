"""Synthetic user–item data with planted macro factors, for tests and sanity checks of the
factor metrics (:mod:`disentangle.metrics.factors`)."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from .interactions import InteractionData

__all__ = ["PlantedTruth", "planted"]

# Users are generated in blocks of about this many draws, which bounds peak memory at a few
# hundred MB whatever the total size. A constant, so a seed gives the same data everywhere.
_DRAWS_PER_BLOCK = 1 << 21


@dataclasses.dataclass(frozen=True)
class PlantedTruth:
    """The hidden variables of :func:`planted`.

    Attributes:
        item_factor: ``M`` ints, the cluster (planted factor) of each item.
        user_mixture: ``N x K`` floats, each user's intent distribution over factors.
    """

    item_factor: np.ndarray
    user_mixture: np.ndarray


def _check(name: str, value, ok: bool, accepted: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range: expected {accepted}")


def planted(num_users: int, num_items: int, num_factors: int, *,
            interactions_per_user: float = 20.0, purity: float = 0.9,
            concentration: float = 0.1, zipf_exponent: float = 1.0, seed: int = 0,
            return_truth: bool = False) -> InteractionData | tuple[InteractionData, PlantedTruth]:
    r"""Seeded user–item interactions generated from ``K`` planted macro factors.

    Generative process:

    1. **Items.** The ``M`` items are split into ``K`` clusters of equal size (sizes differ
       by at most one) by a random permutation, so an item's index says nothing of its
       cluster. Inside each cluster the items get a random popularity rank ``r = 1, 2, ...``
       and weight ``r^{-s}`` with ``s = zipf_exponent`` (``s = 0``: uniform within the
       cluster).
    2. **Users.** User ``u`` has an intent mixture ``θ_u ~ Dirichlet(concentration · 1_K)``;
       a concentration below one makes users peaky (most of ``θ_u`` on one or two
       factors), above one makes them even-handed.
    3. **Interactions.** User ``u`` makes ``n_u = 1 + Poisson(interactions_per_user - 1)``
       draws. Each draw is, with probability ``purity``, a factor ``k ~ θ_u`` followed by an
       item of cluster ``k`` with probability proportional to its weight; otherwise (noise)
       an item uniform over the whole catalogue.
    4. Repeated (user, item) draws are merged, so a user has at most ``n_u`` distinct items
       (fewer where the popularity skew makes repeats likely) and at least one.

    Everything is vectorised (a multinomial per user for the factor counts, inverse-CDF
    search for items) and done in blocks of users, so ~10M interactions take seconds and a
    few hundred MB.

    Args:
        num_users: ``N >= 1``.
        num_items: ``M >= num_factors``.
        num_factors: ``K >= 1``, the number of planted clusters.
        interactions_per_user: mean number of draws per user (``>= 1``), before duplicates
            are merged.
        purity: probability ``[0, 1]`` that a draw follows the user's intents (1: no noise;
            0: uniform random data).
        concentration: Dirichlet concentration ``> 0`` of the user mixtures.
        zipf_exponent: popularity skew ``>= 0`` inside a cluster.
        seed: seed of :func:`numpy.random.default_rng`; the same arguments give the same
            data.
        return_truth: also return the :class:`PlantedTruth`.

    Returns:
        An :class:`InteractionData` with ``user_ids`` ``"0".."N-1"``, ``item_ids``
        ``"0".."M-1"``, titles ``"item i"``, ``item_categories`` the ``M x K`` one-hot of the
        clusters and ``category_names`` ``"factor 0".."factor K-1"``; interactions sorted
        by user, then item. With ``return_truth``, the pair ``(data, truth)``.
    """
    _check("num_users", num_users, isinstance(num_users, (int, np.integer)) and num_users >= 1,
           "an int >= 1")
    _check("num_factors", num_factors,
           isinstance(num_factors, (int, np.integer)) and num_factors >= 1, "an int >= 1")
    _check("num_items", num_items,
           isinstance(num_items, (int, np.integer)) and num_items >= num_factors,
           f"an int >= num_factors ({num_factors})")
    _check("interactions_per_user", interactions_per_user, interactions_per_user >= 1,
           "a number >= 1")
    _check("purity", purity, 0.0 <= purity <= 1.0, "a probability in [0, 1]")
    _check("concentration", concentration, concentration > 0, "a number > 0")
    _check("zipf_exponent", zipf_exponent, zipf_exponent >= 0, "a number >= 0")
    n, m, k = int(num_users), int(num_items), int(num_factors)
    rng = np.random.default_rng(seed)

    # 1. items: cluster and popularity rank from one permutation
    perm = rng.permutation(m)
    item_factor = np.empty(m, dtype=np.int64)
    item_factor[perm] = np.arange(m) % k
    # items in order of (cluster, rank): position j of perm has rank j // k in cluster j % k
    by_cluster = perm[np.lexsort((np.arange(m) // k, np.arange(m) % k))]
    sizes = np.bincount(item_factor, minlength=k)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    rank = np.arange(m) - np.repeat(starts[:-1], sizes) + 1.0
    weight = rank ** -float(zipf_exponent)
    cum = np.cumsum(weight)
    before = np.concatenate([[0.0], cum[starts[1:-1] - 1]])
    share = (cum - np.repeat(before, sizes)) / np.repeat(cum[starts[1:] - 1] - before, sizes)
    share[starts[1:] - 1] = 1.0  # exact cluster ends; queries are cluster + u with u < 1
    item_cdf = np.repeat(np.arange(k, dtype=np.float64), sizes) + share

    # 2. users
    mixture = rng.dirichlet(np.full(k, float(concentration)), size=n)
    draws = 1 + rng.poisson(float(interactions_per_user) - 1.0, size=n)

    # 3. interactions, block by block of users
    bounds = np.searchsorted(np.cumsum(draws),
                             np.arange(_DRAWS_PER_BLOCK, draws.sum(), _DRAWS_PER_BLOCK))
    bounds = np.unique(np.concatenate([[0], bounds, [n]]))
    keys = []
    for lo, hi in itertools.pairwise(bounds):
        pvals = np.concatenate([purity * mixture[lo:hi], np.full((hi - lo, 1), 1.0 - purity)],
                               axis=1)
        counts = rng.multinomial(draws[lo:hi], pvals)  # (users, K + 1): K factors, noise
        users = np.repeat(np.arange(lo, hi), draws[lo:hi])
        factor = np.repeat(np.tile(np.arange(k + 1), hi - lo), counts.ravel())
        noise = factor == k
        items = np.empty(len(factor), dtype=np.int64)
        f = factor[~noise]
        query = f + rng.random(len(f))
        order = np.argsort(query)  # sorted queries make the search cache-friendly
        pos = np.empty(len(f), dtype=np.int64)
        pos[order] = np.searchsorted(item_cdf, query[order], side="right")
        items[~noise] = by_cluster[np.minimum(pos, starts[f + 1] - 1)]
        items[noise] = rng.integers(0, m, size=int(noise.sum()))
        # users of a block are contiguous and increasing: blockwise unique is global unique
        block = np.sort(users * m + items)
        keys.append(block[np.concatenate([[True], block[1:] != block[:-1]])])
    pairs = np.concatenate(keys)
    del keys

    categories = np.zeros((m, k), dtype=np.float32)
    categories[np.arange(m), item_factor] = 1.0
    data = InteractionData(
        users=pairs // m,
        items=pairs % m,
        user_ids=np.arange(n).astype(str),
        item_ids=np.arange(m).astype(str),
        item_titles=np.array([f"item {i}" for i in range(m)], dtype=object),
        item_categories=categories,
        category_names=[f"factor {j}" for j in range(k)],
    )
    if return_truth:
        return data, PlantedTruth(item_factor=item_factor, user_mixture=mixture)
    return data
