"""`InteractionData`: the user–item graph and everything known about its nodes."""
from __future__ import annotations

import dataclasses
from array import array
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:  # torch and PyG load on first use: reading data needs neither
    from torch import Tensor
    from torch_geometric.data import HeteroData

EDGE = ("user", "interacts", "item")
REV_EDGE = ("item", "rev_interacts", "user")


@dataclasses.dataclass(eq=False)
class InteractionData:
    """Implicit user–item interactions as a PyG :class:`~torch_geometric.data.HeteroData`.

    Users and items are indexed ``0..N-1`` and ``0..M-1``; ``user_ids[u]`` and ``item_ids[i]``
    give the raw ids of the source (as strings). Each (user, item) pair occurs at most once.

    Args:
        users: the users of the interacting pairs, as an index array.
        items: their items, an index array of the same length.
        user_ids: raw user ids, one per user index.
        item_ids: raw item ids, one per item index.
        item_titles: optional title per item.
        item_categories: optional ``M x C`` multi-hot float matrix (e.g. MovieLens genres).
        category_names: the ``C`` category names.
    """

    users: np.ndarray
    items: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_titles: np.ndarray | None = None
    item_categories: np.ndarray | None = None
    category_names: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int64)
        self.items = np.asarray(self.items, dtype=np.int64)
        self.user_ids = np.asarray(self.user_ids).astype(str)
        self.item_ids = np.asarray(self.item_ids).astype(str)
        if self.users.shape != self.items.shape:
            raise ValueError("users and items must have the same length")

    # -- sizes ----------------------------------------------------------------------------
    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        return len(self.users)

    def __repr__(self) -> str:
        cats = f", categories={len(self.category_names)}" if self.category_names else ""
        return (f"{type(self).__name__}(users={self.num_users}, items={self.num_items}, "
                f"interactions={self.num_interactions}{cats})")

    # -- views ----------------------------------------------------------------------------
    @cached_property
    def csr(self) -> sp.csr_matrix:
        """``N x M`` binary CSR matrix of user rows (for autoencoders and masking)."""
        data = np.ones(len(self.users), dtype=np.float32)
        m = sp.csr_matrix((data, (self.users, self.items)), shape=(self.num_users, self.num_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    @cached_property
    def graph(self) -> HeteroData:
        """The bipartite graph with both edge directions."""
        import torch
        from torch_geometric.data import HeteroData

        g = HeteroData()
        g["user"].num_nodes = self.num_users
        g["item"].num_nodes = self.num_items
        ei = torch.from_numpy(np.stack([self.users, self.items]))
        g[EDGE].edge_index = ei
        g[REV_EDGE].edge_index = ei.flip(0)
        return g

    @property
    def edge_index(self) -> Tensor:
        """``2 x E`` (user, item) index pairs."""
        return self.graph[EDGE].edge_index

    def item_popularity(self) -> np.ndarray:
        """Number of users per item."""
        return np.bincount(self.items, minlength=self.num_items)

    def user_degree(self) -> np.ndarray:
        """Number of items per user."""
        return np.bincount(self.users, minlength=self.num_users)

    # -- construction ---------------------------------------------------------------------
    def with_pairs(self, users: np.ndarray, items: np.ndarray) -> InteractionData:
        """The same users, items and metadata with another set of interactions."""
        return dataclasses.replace(self, users=users, items=items)

    def subset_items(self, keep: np.ndarray) -> InteractionData:
        """Keep only the items where the boolean mask ``keep`` is true (re-indexed in order);
        interactions with dropped items are removed."""
        new_index = np.full(self.num_items, -1, dtype=np.int64)
        new_index[keep] = np.arange(int(keep.sum()))
        mapped = new_index[self.items]
        ok = mapped >= 0
        return dataclasses.replace(
            self,
            users=self.users[ok],
            items=mapped[ok],
            item_ids=self.item_ids[keep],
            item_titles=None if self.item_titles is None else self.item_titles[keep],
            item_categories=None if self.item_categories is None else self.item_categories[keep],
        )

    def drop_sparse_users(self, min_count: int) -> InteractionData:
        """Drop users with fewer than ``min_count`` interactions (re-indexed in order) and the
        items no remaining user interacted with."""
        keep_user = self.user_degree() >= min_count
        user_index = np.cumsum(keep_user) - 1
        ok = keep_user[self.users]
        kept = dataclasses.replace(self, users=user_index[self.users[ok]], items=self.items[ok],
                                   user_ids=self.user_ids[keep_user])
        return kept.subset_items(kept.item_popularity() > 0)

    @classmethod
    def from_raw(cls, raw_users, raw_items, *, item_meta: dict | None = None,
                 category_names: list[str] | None = None) -> InteractionData:
        """Build from raw id sequences; duplicates are merged.

        ``item_meta`` maps a raw item id (str) to ``(title, [category, ...])``.
        Users and items are indexed in order of first appearance.
        """
        user_ids, users = _factorize(np.asarray(raw_users).astype(str))
        item_ids, items = _factorize(np.asarray(raw_items).astype(str))
        data = cls.from_codes(users, items, user_ids, item_ids)
        return data if item_meta is None else data.with_item_meta(item_meta, category_names)

    @classmethod
    def from_codes(cls, users: np.ndarray, items: np.ndarray, user_ids: np.ndarray,
                   item_ids: np.ndarray) -> InteractionData:
        """Build from integer codes into ``user_ids`` and ``item_ids``: users and items are
        re-indexed in order of first appearance (ids that no pair uses are dropped) and
        duplicate pairs merged."""
        return cls._from_codes(users, items, user_ids, item_ids)[0]

    @classmethod
    def from_timed_codes(cls, users: np.ndarray, items: np.ndarray, user_ids: np.ndarray,
                         item_ids: np.ndarray, times: np.ndarray
                         ) -> tuple[InteractionData, np.ndarray]:
        """:meth:`from_codes`, and the time of each interaction: the latest of its rows'
        ``times``."""
        data, inverse = cls._from_codes(users, items, user_ids, item_ids)
        latest = np.full(data.num_interactions, -np.inf)
        np.maximum.at(latest, inverse, np.asarray(times, dtype=np.float64))
        return data, latest

    @classmethod
    def _from_codes(cls, users, items, user_ids, item_ids) -> tuple[InteractionData, np.ndarray]:
        """The data, and for each input row the index of its (merged) interaction."""
        used_users, users = _first_appearance(users, len(user_ids))
        used_items, items = _first_appearance(items, len(item_ids))
        m = len(used_items)
        key = users * m + items
        del users, items  # a few n-sized arrays are alive at once, not all of them
        pairs, inverse = np.unique(key, return_inverse=True)
        del key
        data = cls(pairs // m if m else pairs, pairs % m if m else pairs,
                   np.asarray(user_ids)[used_users], np.asarray(item_ids)[used_items])
        return data, inverse.reshape(-1)

    def with_item_meta(self, item_meta: dict, category_names: list[str] | None = None
                       ) -> InteractionData:
        """A copy whose items have the titles and categories of ``item_meta`` (raw item id
        -> ``(title, [category, ...])``); an item it does not list keeps its id as title and
        has no category. Categories not in ``category_names`` (default: all, sorted) are
        ignored."""
        titles = np.array([item_meta.get(i, (i, []))[0] for i in self.item_ids], dtype=object)
        if category_names is None:
            category_names = sorted({c for _, cs in item_meta.values() for c in cs})
        col = {c: j for j, c in enumerate(category_names)}
        cats = np.zeros((self.num_items, len(category_names)), dtype=np.float32)
        for r, i in enumerate(self.item_ids):
            for c in item_meta.get(i, ("", []))[1]:
                if c in col:
                    cats[r, col[c]] = 1.0
        return dataclasses.replace(self, item_titles=titles, item_categories=cats,
                                   category_names=list(category_names))


class PairCodes:
    """Integer codes of raw (user, item) ids in order of first appearance, built one pair at
    a time: a dictionary entry per distinct id and four bytes per code, so reading a file
    of interactions holds its ids, not its text."""

    def __init__(self) -> None:
        self.users: dict[str, int] = {}
        self.items: dict[str, int] = {}
        self._u, self._i = array("i"), array("i")

    def __len__(self) -> int:
        return len(self._u)

    def add(self, user: str, item: str) -> None:
        self._u.append(self.users.setdefault(user, len(self.users)))
        self._i.append(self.items.setdefault(item, len(self.items)))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The codes of every pair added: (users, items), int32 views (add no more after)."""
        return np.frombuffer(self._u, dtype=np.int32), np.frombuffer(self._i, dtype=np.int32)

    def data(self, users: np.ndarray, items: np.ndarray, times: np.ndarray | None = None
             ) -> tuple[InteractionData, np.ndarray | None]:
        """:meth:`InteractionData.from_codes` of (a selection of) the codes, and with
        ``times`` (one per row) the time of each interaction (see
        :meth:`InteractionData.from_timed_codes`)."""
        user_ids, item_ids = self.ids(self.users), self.ids(self.items)
        if times is None:
            return InteractionData.from_codes(users, items, user_ids, item_ids), None
        return InteractionData.from_timed_codes(users, items, user_ids, item_ids, times)

    @staticmethod
    def ids(index: dict[str, int]) -> np.ndarray:
        return np.array(list(index), dtype=object).astype(str) if index \
            else np.array([], dtype=str)


def _first_appearance(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For integer codes in ``[0, size)``: the codes used, in order of first appearance, and
    each code's rank among them (as :func:`_factorize`, in memory linear in ``size``)."""
    codes = np.asarray(codes)
    first = np.full(size, len(codes), dtype=np.int64)
    np.minimum.at(first, codes, np.arange(len(codes)))
    used = np.flatnonzero(first < len(codes))
    used = used[np.argsort(first[used], kind="stable")]
    rank = np.empty(size, dtype=np.int64)
    rank[used] = np.arange(len(used))
    return used, rank[codes]


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique values in order of first appearance and the index of each value."""
    uniq, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return uniq[order], rank[inverse]
