"""Recommendations for one user of a run, each with the factor it comes from."""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .metrics.ranking import to_torch_csr
from .models.base import FactorRecommender
from .train.trainer import finite_scores


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
