"""Recommendations for one user of a run, and why: each item with the factor it comes from.

:func:`recommend` ranks the unseen items and names, for a factor model, the factor with the
largest share in ``model.explain``. :func:`explain_recommendations` adds what that factor
stands for — the categories over-represented among its items — and which of the user's own
items belong to it most, so the user sees the items that pull the recommendation in. Only
the K-factor contract is used, so it works for every factor model (MacridVAE, DisenGCN);
baselines get their ranking without factors.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from .metrics.factors import factor_category_matrix
from .metrics.ranking import to_torch_csr
from .models.base import FactorRecommender
from .models.recommender import require_factors
from .train.trainer import finite_scores

if TYPE_CHECKING:
    from .runs import Run

__all__ = [
    "eval_mode",
    "explain_recommendations",
    "factor_category_lift",
    "factor_top_categories",
    "item_titles",
    "item_weights",
    "known_items",
    "recommend",
    "user_index",
]


def user_index(data, raw_user: str) -> int:
    """Index of the raw user id in ``data`` (an InteractionData); ``KeyError`` if unknown."""
    index = np.flatnonzero(data.user_ids == str(raw_user))
    if not len(index):
        raise KeyError(raw_user)
    return int(index[0])


def known_items(split, user: int) -> sp.csr_matrix:
    """``1 x M``: every item the split knows for ``user`` (training row, and history and
    targets where the user is a validation or test user)."""
    rows = [split.train.csr[user]]
    for es in (split.valid, split.test):
        pos = np.flatnonzero(es.users == user)
        if len(pos):
            rows += [es.history[pos[0]], es.target[pos[0]]]
    row = sum(rows[1:], rows[0]).tocsr()
    row.data[:] = 1.0
    return row


@torch.no_grad()
def recommend(run, raw_user: str, k: int = 10) -> dict[str, Any]:
    """Top-``k`` unseen items for the user with raw id ``raw_user`` (``KeyError`` if unknown).

    Each item carries its score, its title and, for a factor model, the factor with the largest
    share in ``model.explain`` (with that share).
    """
    data = run.split.train
    user = user_index(data, raw_user)
    row = known_items(run.split, user)
    users = torch.tensor([user])
    history = to_torch_csr(row)
    model = run.model.eval()
    scores = finite_scores(model.score)(users, history)[0].clone()  # never serve NaN ranks
    scores[torch.from_numpy(row.indices.astype(np.int64))] = -torch.inf
    top = torch.topk(scores, min(k, int(torch.isfinite(scores).sum()))).indices
    titles = data.item_titles if data.item_titles is not None else data.item_ids
    items = [{"item": str(data.item_ids[i]), "title": str(titles[i]), "score": float(scores[i])}
             for i in top.tolist()]
    if isinstance(model, FactorRecommender):  # baselines have no factors to name
        shares = model.explain(users, history, top[None])[0]
        for n, item in enumerate(items):
            item.update(factor=int(shares[n].argmax()), share=float(shares[n].max()))
    return {"user": str(raw_user), "history_size": row.nnz, "items": items}


@contextlib.contextmanager
def eval_mode(model) -> Iterator[Any]:
    """Run the block in eval mode without gradients; switch modes only when the model is
    training (switching can be costly: DisenGCN drops its cached propagation on every
    ``train()``/``eval()`` call)."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        if was_training:
            model.train()


def item_weights(model) -> np.ndarray:
    """``M x K`` :meth:`item_factor_weights` of ``model`` as a float64 array, in eval mode."""
    with eval_mode(model):
        return model.item_factor_weights().detach().cpu().numpy().astype(np.float64)


def item_titles(data) -> np.ndarray:
    """Item titles, or ``"item <raw id>"`` for a dataset without titles."""
    if data.item_titles is not None:
        return np.asarray(data.item_titles, dtype=object)
    return np.array([f"item {i}" for i in data.item_ids], dtype=object)


def factor_category_lift(item_factor_weights, item_categories) -> np.ndarray:
    """``K x C`` lift ``P(k, c) / (P(k) P(c)) = P(c | k) / P(c)`` of the joint
    :func:`~disentangle.metrics.factors.factor_category_matrix`: how much more common
    category ``c`` is among factor ``k``'s items than among all labelled items (1: no
    preference; 0 where a factor or category has no mass). Unlike ``P(c | k)`` it does not
    favour large categories, and unlike ``P(k | c)`` not large factors; ``macro/bijection``
    is computed on it."""
    joint = factor_category_matrix(item_factor_weights, item_categories, normalize="all")
    outer = np.outer(joint.sum(axis=1), joint.sum(axis=0))
    return np.divide(joint, outer, out=np.zeros_like(joint), where=outer > 0)


def factor_top_categories(item_factor_weights, item_categories, category_names, *,
                          top: int = 3, min_share: float = 0.01) -> list[list[dict[str, Any]]]:
    """Per factor, the ``top`` categories most over-represented among its items.

    ``share`` is ``P(category | factor)``, the row-normalised
    :func:`~disentangle.metrics.factors.factor_category_matrix` (each item spreads its factor
    weights evenly over its categories). Ranking by share alone names the largest
    categories (Drama, Comedy on MovieLens) for every factor, so categories are ranked by
    ``lift = P(category | factor) / P(category)`` (above 1: more common in this factor than
    among all labelled items), among those with ``share >= min_share`` (a tiny category's
    lift is noise).

    Returns ``K`` lists of ``{"category", "share", "lift"}``, best first (empty lists when
    there are no categories).
    """
    w = np.asarray(item_factor_weights, dtype=np.float64)
    k = w.shape[1]
    if item_categories is None or not len(category_names):
        return [[] for _ in range(k)]
    share = factor_category_matrix(w, item_categories, normalize="factor")
    lift = factor_category_lift(w, item_categories)
    out = []
    for f in range(k):
        ok = np.flatnonzero(share[f] >= min_share)
        order = ok[np.lexsort((-share[f, ok], -lift[f, ok]))][:top]
        out.append([{"category": str(category_names[j]), "share": float(share[f, j]),
                     "lift": float(lift[f, j])} for j in order])
    return out


def explain_recommendations(run: Run, raw_user: str, k: int = 10, *, top_categories: int = 3,
                            top_history: int = 3) -> list[dict[str, Any]]:
    """The top-``k`` recommendations of a user, each with its factor and why.

    Args:
        run: a loaded run (:func:`disentangle.runs.load_run`).
        raw_user: the user's raw id (``KeyError`` if the run does not know it).
        k: number of recommendations.
        top_categories: categories listed per factor (see :func:`factor_top_categories`).
        top_history: the user's own items listed per recommendation.

    Returns one dict per recommended item, best first:

    * ``rank`` (1-based), ``item`` (raw id), ``title`` (``"item <raw id>"`` without titles),
      ``score``;
    * ``factor`` — the factor with the largest share of the item's score
      (``model.explain``), and ``share``, that share;
    * ``item_categories`` — the item's own category names;
    * ``factor_categories`` — that factor's top categories, ``{"category", "share",
      "lift"}``;
    * ``drivers`` — the user's known items (training row, and fold-in history and targets
      for held-out users, as :func:`~disentangle.explain.known_items`) with the largest
      weight in that factor (``item_factor_weights()[:, factor]``; ties go to the more
      popular item), as ``{"item", "title", "weight"}``.

    A model without factors raises :class:`~disentangle.models.recommender.NoFactorsError`.
    """
    require_factors(run.model, "recommend --explain")
    data = run.split.train
    recs = recommend(run, raw_user, k)
    weights = item_weights(run.model)
    cats = data.item_categories
    names = list(data.category_names)
    per_factor = factor_top_categories(weights, cats, names, top=top_categories)
    known = known_items(run.split, user_index(data, raw_user)).indices.astype(np.int64)
    titles = item_titles(data)
    position = {str(item): i for i, item in enumerate(data.item_ids)}
    popularity = data.item_popularity()[known]
    out = []
    for rank, rec in enumerate(recs["items"], 1):
        f = rec["factor"]
        order = np.lexsort((-popularity, -weights[known, f]))[:top_history]
        i = position[rec["item"]]
        own = [] if cats is None else [names[c] for c in np.flatnonzero(cats[i] > 0)]
        out.append({
            "rank": rank, "item": rec["item"], "title": str(titles[i]), "score": rec["score"],
            "factor": f, "share": rec["share"], "item_categories": own,
            "factor_categories": per_factor[f],
            "drivers": [{"item": str(data.item_ids[j]), "title": str(titles[j]),
                         "weight": float(weights[j, f])} for j in known[order]],
        })
    return out
