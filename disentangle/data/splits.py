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
import logging
import re
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .interactions import InteractionData
from .sources import DataError, Source, read_text

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
    #: Where the items' titles and categories came from, or why there are none: set for a
    #: ready split (:func:`load_split_dir`); ``None`` when they are the dataset's own.
    item_metadata: str | None = None

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


SPLIT_FILES = ("train", "validation_tr", "validation_te", "test_tr", "test_te")
#: A row of a ``uid,sid`` file (blanks and a blank row allowed), and the rows after the
#: header as Liang's preprocessing writes them (checked first: one regex over the file).
_ROW = re.compile(r"[ \t]*(?:[0-9]{1,18}[ \t]*,[ \t]*[0-9]{1,18}[ \t]*)?\r?", re.ASCII)
_PLAIN = re.compile(r"(?:[0-9]{1,18},[0-9]{1,18}\n)*(?:[0-9]{1,18},[0-9]{1,18})?", re.ASCII)

log = logging.getLogger(__name__)


def load_split_dir(path: str | Path, catalog: InteractionData | None = None,
                   catalog_name: str | None = None) -> Split:
    """Read a split made by Liang et al.'s VAE-CF preprocessing (``pro_sg`` folder).

    The folder holds ``train.csv``, ``validation_tr.csv``, ``validation_te.csv``,
    ``test_tr.csv`` and ``test_te.csv`` (a ``uid,sid`` header, then one ``uid,sid`` row of
    non-negative integers per interaction), ``unique_sid.txt`` (the raw item id of each
    ``sid``, one per line) and optionally ``unique_uid.txt`` (the raw user id of each
    ``uid``; without it the uids must number the users ``0..N-1``). ``uid`` and ``sid`` are
    kept as indices.

    Refused with a :class:`DataError` naming the file and the line: a missing file, a row
    that is not two integers, a ``sid`` or ``uid`` past the id lists, a repeated raw id, and
    a split that leaks — a validation or test user with rows in ``train.csv``, a user both
    validating and testing, or a held-out target that is also that user's fold-in history.

    **Titles and categories.** The folder carries item ids only. Titles and categories are
    taken from ``catalog`` (a dataset loaded from its raw files, named ``catalog_name``)
    only when the split was made from it (see :func:`match_catalog`); otherwise the split
    has none, a warning says why (also when ``catalog_name`` is given without a
    ``catalog``: it could not be loaded), and :attr:`Split.item_metadata` records it.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: {'no such folder' if not path.exists() else 'not a folder'}; "
                        f"expected a split folder with {', '.join(SPLIT_FILES)}.csv and "
                        f"unique_sid.txt")
    item_ids = _id_list(path / "unique_sid.txt", "item")
    parts = {name: _pairs(path / f"{name}.csv", len(item_ids)) for name in SPLIT_FILES}
    num_users = 1 + max(int(u.max(initial=-1)) for u, _, _ in parts.values())
    uid_file = path / "unique_uid.txt"
    if uid_file.exists():
        user_ids = _id_list(uid_file, "user")
        for name, (u, _, lines) in parts.items():
            if len(u) and u.max() >= len(user_ids):
                k = int(u.argmax())
                raise DataError(f"{path / f'{name}.csv'}: line {lines[k]}: uid {u[k]} is past "
                                f"the {len(user_ids)} users of {uid_file.name}")
    else:  # the uids must then number the users 0..N-1, as Liang's preprocessing does
        used = np.unique(np.concatenate([u for u, _, _ in parts.values()]))
        if len(used) != num_users:
            name, (u, _, lines) = max(parts.items(), key=lambda p: p[1][0].max(initial=-1))
            k = int(u.argmax())
            raise DataError(f"{path / f'{name}.csv'}: line {lines[k]}: uid {u[k]} is past the "
                            f"{len(used)} users of the split; without unique_uid.txt the uids "
                            f"must number the users 0 to {len(used) - 1}")
        user_ids = np.arange(num_users).astype(str)
    _check_leakage(path, parts)
    titles = cats = None
    names: list[str] = []
    label = catalog_name or "the given dataset"
    if catalog is None:
        note = (f"{path}: no titles or categories: "
                + (f"dataset {catalog_name} was not loaded" if catalog_name else
                   "no dataset given to take them from") + "; items are shown by their raw ids")
        if catalog_name:  # the caller meant to have one
            log.warning(note)
    else:
        mismatch = match_catalog(catalog, item_ids, user_ids if uid_file.exists() else None,
                                 [(u, i) for u, i, _ in parts.values()])
        if mismatch is None:
            index = {raw: k for k, raw in enumerate(catalog.item_ids)}
            rows = np.array([index[raw] for raw in item_ids], dtype=np.int64)
            if catalog.item_titles is not None:
                titles = np.asarray(catalog.item_titles, dtype=object)[rows]
            if catalog.item_categories is not None:
                cats = np.asarray(catalog.item_categories, dtype=np.float32)[rows]
                names = list(catalog.category_names)
            have = " and ".join(what for what, x in (("titles", titles), ("categories", cats))
                                if x is not None)
            note = (f"{have} of {label}" if have else
                    f"no titles or categories: {label} has none") + \
                f"; the split's items and interactions are {label}'s"
        else:
            note = (f"{path}: no titles or categories: the split was not made from {label} "
                    f"({mismatch}); give --dataset the dataset the split was made from")
            log.warning(note)
    train = InteractionData(*parts["train"][:2], user_ids, item_ids, titles, cats, names)
    m = len(item_ids)

    def eval_set(prefix: str) -> EvalSet:
        hist, tgt = parts[f"{prefix}_tr"][:2], parts[f"{prefix}_te"][:2]
        users = np.unique(np.concatenate([hist[0], tgt[0]]))
        return _eval_set(users, hist, tgt, m)

    return Split(train, eval_set("validation"), eval_set("test"), "heldout", None, note)


def match_catalog(catalog: InteractionData, item_ids: np.ndarray, user_ids: np.ndarray | None,
                  pairs: list[tuple[np.ndarray, np.ndarray]]) -> str | None:
    """Why a split (raw ``item_ids`` per ``sid``, raw ``user_ids`` per ``uid`` when known, and
    its ``(uid, sid)`` index pairs) was not made from ``catalog``; ``None`` when it was.

    The rule: **every item** of the split is an item of the catalogue, and the split's
    **interactions are the catalogue's**:

    - with raw user ids, every ``(user, item)`` pair of the split is an interaction of the
      catalogue (Liang's protocol only drops interactions, it never makes new ones);
    - without them, no item has more interactions in the split than in the catalogue, and
      the split holds at least half of the catalogue's interactions with its items.

    Matching ids alone is not enough: MovieLens 100K, 1M and latest-small all number their
    films from 1, and most of ml-100k's ids are also ml-latest-small ids for other films.
    """
    index = {raw: k for k, raw in enumerate(catalog.item_ids)}
    rows = np.array([index.get(raw, -1) for raw in item_ids], dtype=np.int64)
    missing = np.flatnonzero(rows < 0)
    if len(missing):
        return (f"{len(missing)} of its {len(item_ids)} items are not in it, e.g. item "
                f"{str(item_ids[missing[0]])!r}")
    su = np.concatenate([u for u, _ in pairs])
    si = rows[np.concatenate([i for _, i in pairs])]
    if user_ids is not None:
        users = {raw: k for k, raw in enumerate(catalog.user_ids)}
        cu = np.array([users.get(raw, -1) for raw in user_ids], dtype=np.int64)[su]
        m = catalog.num_items
        found = np.isin(cu * m + si, catalog.users.astype(np.int64) * m + catalog.items) \
            & (cu >= 0)
        if not found.all():
            k = int(np.flatnonzero(~found)[0])
            user, item = str(user_ids[su[k]]), str(catalog.item_ids[si[k]])
            return (f"{int((~found).sum())} of its {len(found)} interactions are not in it, "
                    f"e.g. user {user!r} with item {item!r}")
        return None
    split_count = np.bincount(si, minlength=catalog.num_items)
    catalog_count = catalog.item_popularity()
    over = np.flatnonzero(split_count > catalog_count)
    if len(over):
        j = int(over[0])
        return (f"{len(over)} items have more interactions in the split than in it, e.g. item "
                f"{str(catalog.item_ids[j])!r}: {split_count[j]} against {catalog_count[j]}")
    total = int(catalog_count[rows].sum())
    if 2 * len(si) < total:
        return (f"the split holds {len(si)} of the {total} interactions it has with the "
                f"split's items")
    return None


def _id_list(path: Path, role: str) -> np.ndarray:
    """The raw ids of ``unique_sid.txt`` / ``unique_uid.txt``: one per line, distinct."""
    ids: list[str] = []
    seen: dict[str, int] = {}
    lines = read_text(path, f"one raw {role} id per line").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    for n, line in enumerate(lines, 1):
        raw = line.strip()
        if not raw:
            raise DataError(f"{path}: line {n}: empty {role} id")
        if raw in seen:
            raise DataError(f"{path}: line {n}: {role} id {raw!r} repeats line {seen[raw]}; "
                            f"each id must be listed once")
        seen[raw] = n
        ids.append(raw)
    return np.array(ids, dtype=str)


def _pairs(path: Path, num_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(uid, sid, line number)`` of each row of a ``uid,sid`` file."""
    text = read_text(path, "a 'uid,sid' header and rows of two integers")
    head, _, body = text.partition("\n")
    if head.strip().lstrip("\ufeff").replace(" ", "") != "uid,sid":
        raise DataError(f"{path}: line 1: {_shorten(head.strip())!r}; expected the header "
                        f"'uid,sid'")
    if _PLAIN.fullmatch(body):  # the usual file: no blanks, no blank lines, \n endings
        numbers = np.array(body.replace(",", "\n").split(), dtype=np.int64).reshape(-1, 2)
        line_of = np.arange(2, 2 + len(numbers))
    else:
        lines = body.split("\n")
        bad = next((n for n, line in enumerate(lines, 2) if _ROW.fullmatch(line) is None), None)
        if bad is not None:
            raise DataError(f"{path}: line {bad}: {_shorten(lines[bad - 2].strip())!r}; "
                            f"expected two non-negative integers 'uid,sid' (of at most 18 "
                            f"digits)")
        numbers = np.array(body.replace(",", " ").split(), dtype=np.int64).reshape(-1, 2)
        line_of = np.array([n for n, line in enumerate(lines, 2) if line.strip()],
                           dtype=np.int64)
    uid, sid = numbers[:, 0], numbers[:, 1]
    if len(sid) and sid.max() >= num_items:
        k = int(sid.argmax())
        raise DataError(f"{path}: line {line_of[k]}: sid {sid[k]} is past the {num_items} "
                        f"items of unique_sid.txt")
    return uid, sid, line_of


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _check_leakage(path: Path, parts: dict) -> None:
    """Refuse a split whose held-out users are trained on or shared between validation and
    test, or whose targets are also fold-in history."""
    held = {}
    for prefix in ("validation", "test"):
        users = np.union1d(parts[f"{prefix}_tr"][0], parts[f"{prefix}_te"][0])
        held[prefix] = users
        train_u, _, lines = parts["train"]
        leak = np.flatnonzero(np.isin(train_u, users))
        if len(leak):
            k = int(leak[0])
            n_users = len(np.unique(train_u[leak]))
            raise DataError(f"{path / 'train.csv'}: line {lines[k]}: uid {train_u[k]} is a "
                            f"{prefix} user ({prefix}_tr.csv/{prefix}_te.csv); train.csv holds "
                            f"{len(leak)} rows of {n_users} {prefix} user"
                            f"{'s' * (n_users != 1)}: the model would be trained on the users "
                            f"it is evaluated on")
        hist, tgt = parts[f"{prefix}_tr"], parts[f"{prefix}_te"]
        m = 1 + max(int(hist[1].max(initial=-1)), int(tgt[1].max(initial=-1)))
        both = np.flatnonzero(np.isin(tgt[0] * m + tgt[1], hist[0] * m + hist[1]))
        if len(both):
            k = int(both[0])
            raise DataError(f"{path / f'{prefix}_te.csv'}: line {tgt[2][k]}: uid {tgt[0][k]}, "
                            f"sid {tgt[1][k]} is also in {prefix}_tr.csv: a held-out target "
                            f"must not be in the user's fold-in history")
    shared = np.intersect1d(held["validation"], held["test"])
    if len(shared):
        raise DataError(f"{path}: uid {shared[0]} is both a validation and a test user "
                        f"({len(shared)} such users); the two sets must be disjoint")
    if not len(held["test"]):
        raise DataError(f"{path}: test_tr.csv and test_te.csv have no rows; expected the "
                        f"held-out test users")
    if not len(parts["train"][0]):
        raise DataError(f"{path / 'train.csv'}: no rows; expected the training interactions")
