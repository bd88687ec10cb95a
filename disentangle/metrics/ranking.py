r"""Full-ranking top-k metrics.

For a user with target set :math:`T` and the top-:math:`k` list :math:`r_1..r_k` ranked over
all items except the user's history:

.. math::
    \mathrm{NDCG@}k = \frac{\sum_{j=1}^{k} [r_j \in T] / \log_2(j+1)}
                           {\sum_{j=1}^{\min(k,|T|)} 1 / \log_2(j+1)}

    \mathrm{Recall@}k = \frac{|\{r_1..r_k\} \cap T|}{|T|}
    \qquad
    \mathrm{Recall_{Liang}@}k = \frac{|\{r_1..r_k\} \cap T|}{\min(k, |T|)}

``recall`` is the definition of RecBole, LightGCN and DGCF; ``recall_liang`` the one of
Liang et al. (2018) and MacridVAE. A user without targets scores 0 on every metric (as the
MacridVAE reference code counts it) and is included in the mean.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

Scorer = Callable[[Tensor, Tensor], Tensor]


def to_torch_csr(m: sp.csr_matrix, device: str | torch.device = "cpu") -> Tensor:
    """A scipy CSR matrix as a float32 torch sparse CSR tensor."""
    return torch.sparse_csr_tensor(
        torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64)),
        torch.from_numpy(m.data.astype(np.float32)), size=m.shape, device=device,
        check_invariants=False)


def topk_hits(scores: Tensor, history: sp.csr_matrix, target: sp.csr_matrix, k: int) -> np.ndarray:
    """``B x k`` boolean: whether the j-th ranked item (history masked) is a target.

    ``scores`` is left as it is (the history is masked on a copy)."""
    m = scores.shape[1]
    rows = np.repeat(np.arange(history.shape[0], dtype=np.int64), np.diff(history.indptr))
    flat = torch.from_numpy(rows * m + history.indices.astype(np.int64)).to(scores.device)
    masked = scores.clone(memory_format=torch.contiguous_format)
    masked.view(-1).index_fill_(0, flat, -torch.inf)
    top = torch.topk(masked, min(k, m), dim=1).indices.cpu().numpy()
    target_rows = np.repeat(np.arange(target.shape[0]), np.diff(target.indptr))
    target_keys = np.sort(target_rows * m + target.indices)
    keys = np.arange(len(top))[:, None] * m + top
    pos = np.searchsorted(target_keys, keys).clip(max=max(len(target_keys) - 1, 0))
    return (target_keys[pos] == keys) if len(target_keys) else np.zeros(keys.shape, bool)


def metrics_from_hits(hits: np.ndarray, num_targets: np.ndarray, ks: Sequence[int]) -> dict:
    """Per-user ``ndcg@k``, ``recall@k`` and ``recall_liang@k`` arrays from ranked hits."""
    discount = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))
    out = {}
    for k in ks:
        h = hits[:, :k]
        n_hit = h.sum(1)
        ideal = np.cumsum(discount)[np.clip(np.minimum(k, num_targets) - 1, 0, None)]
        safe = num_targets > 0
        out[f"ndcg@{k}"] = np.where(safe, (h * discount[:k]).sum(1) / ideal, 0.0)
        out[f"recall@{k}"] = np.where(safe, n_hit / np.maximum(num_targets, 1), 0.0)
        out[f"recall_liang@{k}"] = np.where(
            safe, n_hit / np.maximum(np.minimum(k, num_targets), 1), 0.0)
    return out


@torch.no_grad()
def evaluate(score: Scorer, eval_set, ks: Sequence[int] = (20, 50, 100),
             chunk_size: int = 1024, device: str | torch.device = "cpu") -> dict[str, float]:
    """Mean metrics over ``eval_set`` (an :class:`~disentangle.data.EvalSet`).

    ``score(users, history)`` is called on user chunks of ``chunk_size`` so memory stays at
    ``chunk_size x M`` scores. The result also holds ``users`` and ``users_without_target``.
    """
    per_user: dict[str, list] = {}
    num_targets = np.diff(eval_set.target.indptr)
    for start in range(0, len(eval_set), chunk_size):
        sl = slice(start, start + chunk_size)
        hist = eval_set.history[sl]
        users = torch.from_numpy(eval_set.users[sl]).to(device)
        scores = score(users, to_torch_csr(hist, device)).float()
        hits = topk_hits(scores, hist, eval_set.target[sl], max(ks))
        for name, vals in metrics_from_hits(hits, num_targets[sl], ks).items():
            per_user.setdefault(name, []).append(vals)
    result = {name: float(np.concatenate(v).mean()) for name, v in per_user.items()}
    result["users"] = len(eval_set)
    result["users_without_target"] = eval_set.num_without_target
    return result


def popularity_scorer(train, device: str | torch.device = "cpu") -> Scorer:
    """Score every item by its number of training users (the reference line)."""
    pop = torch.from_numpy(train.item_popularity().astype(np.float32)).to(device)
    return lambda users, history: pop.expand(len(users), -1)
