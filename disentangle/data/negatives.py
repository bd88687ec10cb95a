"""Negative sampling for pairwise and sampled-softmax losses (DisenGCN, BPR, LightGCN)."""
from __future__ import annotations

import torch
from torch import Tensor


def reject_positives(users: Tensor, negatives: Tensor, items: Tensor, num_items: int,
                     generator: torch.Generator, max_rounds: int = 100) -> None:
    """Redraw, in place, every negative that is a positive of its user (``users``/``items``
    are all the training pairs); gives up after ``max_rounds`` (users with almost every item)."""
    if len(users) == 0:
        return
    known = torch.sort(users * num_items + items).values
    todo = torch.arange(len(users))
    for _ in range(max_rounds):
        keys = users[todo] * num_items + negatives[todo]
        at = torch.searchsorted(known, keys).clamp(max=len(known) - 1)
        todo = todo[known[at] == keys]
        if len(todo) == 0:
            return
        negatives[todo] = torch.randint(num_items, (len(todo),), generator=generator)
