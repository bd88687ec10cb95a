"""Split protocols: from one :class:`InteractionData` to train / validation / test.

Every protocol returns a :class:`Split`: the training interactions (same user and item index
space as the evaluation sets) and two :class:`EvalSet` objects. An evaluation set lists users,
their *history* (what the model may read and what ranking masks) and their *targets*.

- ``heldout`` — strong generalisation (Liang et al., WWW 2018; MacridVAE): ``heldout_users``
  validation and as many test users are held out; training uses only the other users; items
  that only held-out users saw are dropped; each held-out user with at least 5 items gives
  ``int(0.2 n)`` random items as targets and keeps the rest as fold-in history (users with
  fewer keep everything as history and have no targets).
- ``ratio`` — per user, a random ``0.8 / 0.1 / 0.1`` split of the interactions into train /
  validation / test (the RecBole default). Test history is train + validation.
- ``given`` — the dataset's own test interactions (LightGCN-format data); a seeded
  ``valid_ratio`` share of each user's training interactions becomes the validation set.
- :func:`load_split_dir` reads a ready split in the format of Liang et al.'s preprocessing.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .interactions import InteractionData
from .sources import Source

PROTOCOLS = ("heldout", "ratio", "given")


@dataclasses.dataclass(eq=False)
class EvalSet:
    """Users to evaluate, with ``history`` (read and masked) and ``target`` rows (CSR,
    ``len(users) x M``)."""

    users: np.ndarray
    history: sp.csr_matrix
    target: sp.csr_matrix

    def __len__(self) -> int:
        return len(self.users)

    @property
    def num_without_target(self) -> int:
        return int((np.diff(self.target.indptr) == 0).sum())


@dataclasses.dataclass(eq=False)
class Split:
    train: InteractionData
    valid: EvalSet
    test: EvalSet
    protocol: str
    seed: int | None = None

    @property
    def has_validation(self) -> bool:
        """Whether there are validation users to select a model on (a refit has none)."""
        return len(self.valid) > 0

    def __repr__(self) -> str:
        return (f"Split({self.protocol}, train={self.train.num_interactions} interactions, "
                f"valid={len(self.valid)} users, test={len(self.test)} users)")


def _rows(users: np.ndarray, items: np.ndarray, order: np.ndarray, num_items: int) -> sp.csr_matrix:
    """CSR with one row per entry of ``order`` (user indices) holding that user's items."""
    pos = np.full(max(int(users.max(initial=-1)), int(order.max(initial=-1))) + 1, -1)
    pos[order] = np.arange(len(order))
    rows = pos[users]
    ok = rows >= 0
    m = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (rows[ok], items[ok])),
                      shape=(len(order), num_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _eval_set(users: np.ndarray, hist: tuple, target: tuple, num_items: int) -> EvalSet:
    return EvalSet(users, _rows(*hist, users, num_items), _rows(*target, users, num_items))


def _per_user_rank(users: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each interaction: its rank in a random order within its user, and the user's count."""
    order = np.lexsort((rng.random(len(users)), users))
    counts = np.bincount(users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = np.arange(len(users)) - starts[users[order]]
    return rank, counts[users]


def heldout_split(data: InteractionData, seed: int = 98765, heldout_users: float = 0.1,
                  target_ratio: float = 0.2, min_items: int = 5) -> Split:
    """Strong-generalisation split (see the module docstring).

    Args:
        heldout_users: number of validation users (and as many test users), or a fraction of
            all users.
    """
    rng = np.random.default_rng(seed)
    n = data.num_users
    h = round(heldout_users * n) if isinstance(heldout_users, float) else int(heldout_users)
    if h < 1 or 2 * h >= n:
        raise ValueError(f"heldout_users={heldout_users!r} leaves no users to train or to test "
                         f"({n} users)")
    perm = rng.permutation(n)
    train_users, valid_users, test_users = perm[:-2 * h], perm[-2 * h:-h], perm[-h:]
    is_train = np.zeros(n, bool)
    is_train[train_users] = True
    seen = np.zeros(data.num_items, bool)
    seen[data.items[is_train[data.users]]] = True
    data = data.subset_items(seen)
    u, i = data.users, data.items
    rank, count = _per_user_rank(u, rng)
    n_target = np.where(count >= min_items, (target_ratio * count).astype(np.int64), 0)
    is_target = (rank < n_target) & ~is_train[u]
    train = data.with_pairs(u[is_train[u]], i[is_train[u]])
    hist = (u[~is_target], i[~is_target])
    tgt = (u[is_target], i[is_target])
    return Split(train, _eval_set(np.sort(valid_users), hist, tgt, data.num_items),
                 _eval_set(np.sort(test_users), hist, tgt, data.num_items), "heldout", seed)


def ratio_split(data: InteractionData, seed: int = 2020,
                ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """Per-user random split into train / validation / test by ``ratios``."""
    if len(ratios) != 3 or min(ratios) < 0 or not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"ratios={ratios!r} must be three non-negative shares summing to 1")
    rng = np.random.default_rng(seed)
    rank, count = _per_user_rank(data.users, rng)
    n_train = (ratios[0] * count).astype(np.int64)
    n_valid = ((ratios[0] + ratios[1]) * count).astype(np.int64)
    part = np.where(rank < n_train, 0, np.where(rank < n_valid, 1, 2))
    return _three_way(data, part, "ratio", seed)


def given_split(source: Source, seed: int = 2020, valid_ratio: float = 0.1) -> Split:
    """The dataset's own test set; ``valid_ratio`` of each user's training items validate (with
    0 the validation set is empty and every training interaction trains)."""
    data, test = source.data, source.given_test
    if test is None:
        raise ValueError("protocol 'given' needs a dataset with its own test set "
                         "(LightGCN-format train.txt/test.txt)")
    rng = np.random.default_rng(seed)
    u = data.users
    rank, _ = _per_user_rank(np.where(test, -1, u) + 1, rng)
    train_count = np.bincount(u[~test], minlength=data.num_users)[u]
    part = np.where(test, 2, np.where(rank < (valid_ratio * train_count).astype(np.int64), 1, 0))
    return _three_way(data, part, "given", seed)


def _three_way(data: InteractionData, part: np.ndarray, protocol: str, seed) -> Split:
    """Split by ``part`` (0 train, 1 validation, 2 test); test history = train + validation."""
    u, i = data.users, data.items
    train = data.with_pairs(u[part == 0], i[part == 0])
    m = data.num_items
    valid = _eval_set(np.unique(u[part == 1]), (u[part == 0], i[part == 0]),
                      (u[part == 1], i[part == 1]), m)
    test = _eval_set(np.unique(u[part == 2]), (u[part < 2], i[part < 2]),
                     (u[part == 2], i[part == 2]), m)
    return Split(train, valid, test, protocol, seed)


def make_split(source: Source, protocol: str, seed: int, **options) -> Split:
    """Apply a protocol by name to a loaded source."""
    if protocol == "heldout":
        return heldout_split(source.data, seed, **options)
    if protocol == "ratio":
        return ratio_split(source.data, seed, **options)
    if protocol == "given":
        return given_split(source, seed, **options)
    raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")


def load_split_dir(path: str | Path, catalog: InteractionData | None = None) -> Split:
    """Read a split made by Liang et al.'s VAE-CF preprocessing (``pro_sg`` folder).

    ``uid`` and ``sid`` are kept as indices; ``unique_sid.txt`` (and ``unique_uid.txt`` where
    present) give the raw ids. With a ``catalog`` (the same dataset loaded from its raw files)
    titles and categories are attached by raw item id.
    """
    path = Path(path)

    def pairs(name: str) -> tuple[np.ndarray, np.ndarray]:
        a = np.loadtxt(path / name, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
        return a[:, 0], a[:, 1]

    item_ids = np.loadtxt(path / "unique_sid.txt", dtype=str, ndmin=1)
    parts = {name: pairs(f"{name}.csv") for name in
             ("train", "validation_tr", "validation_te", "test_tr", "test_te")}
    num_users = 1 + max(int(u.max(initial=-1)) for u, _ in parts.values())
    uid_file = path / "unique_uid.txt"
    user_ids = (np.loadtxt(uid_file, dtype=str, ndmin=1) if uid_file.exists()
                else np.arange(num_users).astype(str))
    titles = cats = None
    names: list[str] = []
    if catalog is not None:
        index = {raw: k for k, raw in enumerate(catalog.item_ids)}
        rows = np.array([index.get(raw, -1) for raw in item_ids])
        if catalog.item_titles is not None:
            titles = np.array([catalog.item_titles[r] if r >= 0 else raw
                               for r, raw in zip(rows, item_ids)], dtype=object)
        if catalog.item_categories is not None:
            cats = np.where(rows[:, None] >= 0, catalog.item_categories[rows], 0).astype(np.float32)
            names = catalog.category_names
    train = InteractionData(*parts["train"], user_ids, item_ids, titles, cats, names)
    m = len(item_ids)

    def eval_set(prefix: str) -> EvalSet:
        hist, tgt = parts[f"{prefix}_tr"], parts[f"{prefix}_te"]
        users = np.unique(np.concatenate([hist[0], tgt[0]]))
        return _eval_set(users, hist, tgt, m)

    return Split(train, eval_set("validation"), eval_set("test"), "heldout", None)
