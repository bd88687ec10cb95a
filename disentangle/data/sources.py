"""Where interaction data comes from: the embedded default and loaders for public datasets.

Every loader returns a :class:`Source`: the interactions as an
:class:`~disentangle.data.InteractionData` and, for datasets published with a fixed split
(LightGCN's ``train.txt``/``test.txt``), a boolean mask of the test interactions.

Only ``ml-latest-small`` ships inside the package (its license allows redistribution under
the same terms; the license text ships beside it). The other MovieLens sets may not be
redistributed: point ``data_dir`` (``--data-dir``) at a folder that holds their original
files, or set ``DISENTANGLE_DATA`` to a folder with one subfolder per dataset.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

from .interactions import InteractionData

DATA_ENV = "DISENTANGLE_DATA"
EMBEDDED = "ml-latest-small"


@dataclasses.dataclass
class Source:
    """A loaded dataset: interactions, and the test mask of a dataset's given split."""

    data: InteractionData
    given_test: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    files: tuple[str, ...]
    loader: Callable[[Path, "LoadOptions"], Source]
    embedded: bool = False


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """Binarisation and filtering applied while loading.

    Args:
        rating_threshold: keep ratings ``>= rating_threshold`` (explicit-rating sets only).
        min_user_interactions: drop users with fewer interactions after binarisation
            (Liang et al. 2018 and MacridVAE use 5).
    """

    rating_threshold: float = 4.0
    min_user_interactions: int = 5


# -- public entry points --------------------------------------------------------------------
def dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding ``name``'s files: ``data_dir`` itself, ``$DISENTANGLE_DATA/name``,
    or the package's embedded copy."""
    info = _info(name)
    candidates = []
    if data_dir is not None:
        candidates.append(Path(data_dir))
    elif os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]) / name)
    if info.embedded and data_dir is None:
        candidates.append(Path(str(resources.files(__package__) / "embedded" / name)))
    for c in candidates:
        if all((c / f).exists() or (c / f"{f}.gz").exists() for f in info.files):
            return c
    where = ", ".join(str(c) for c in candidates) or f"nowhere (give --data-dir or set {DATA_ENV})"
    raise FileNotFoundError(f"dataset {name!r} needs {', '.join(info.files)}; not found in {where}")


def load_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 options: LoadOptions = LoadOptions()) -> Source:
    """Load a dataset by name (see :data:`DATASETS`)."""
    info = _info(name)
    return info.loader(dataset_dir(name, data_dir), options)


def available() -> list[dict]:
    """One row per known dataset: name, description, and where it was found (or not)."""
    rows = []
    for info in DATASETS.values():
        try:
            where = str(dataset_dir(info.name))
        except FileNotFoundError:
            where = None
        rows.append({"name": info.name, "description": info.description, "path": where})
    return rows


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


# -- helpers --------------------------------------------------------------------------------
def _open_text(path: Path):
    gz = path.with_name(path.name + ".gz")
    if not path.exists() and gz.exists():
        return gzip.open(gz, "rt", encoding="utf-8", newline="")
    return open(path, encoding="latin-1" if path.suffix in (".item", ".dat") else "utf-8",
                newline="")


def _build(users, items, meta, category_names, options: LoadOptions) -> Source:
    data = InteractionData.from_raw(users, items, item_meta=meta, category_names=category_names)
    return Source(data.drop_sparse_users(options.min_user_interactions))


# -- MovieLens ------------------------------------------------------------------------------
def _load_ml_latest(root: Path, options: LoadOptions) -> Source:
    with _open_text(root / "ratings.csv") as f:
        rows = list(csv.reader(f))[1:]
    ratings = np.array([float(r[2]) for r in rows])
    keep = ratings >= options.rating_threshold
    users = np.array([r[0] for r in rows])[keep]
    items = np.array([r[1] for r in rows])[keep]
    meta = {}
    with _open_text(root / "movies.csv") as f:
        for movie_id, title, genres in list(csv.reader(f))[1:]:
            cats = [] if genres == "(no genres listed)" else genres.split("|")
            meta[movie_id] = (title, cats)
    names = sorted({c for _, cs in meta.values() for c in cs})
    return _build(users, items, meta, names, options)


def _load_ml_100k(root: Path, options: LoadOptions) -> Source:
    raw = np.loadtxt(root / "u.data", dtype=np.int64)
    keep = raw[:, 2] >= options.rating_threshold
    with _open_text(root / "u.genre") as f:
        names = [line.split("|")[0] for line in f if line.strip()]
    meta = {}
    with _open_text(root / "u.item") as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            flags = parts[5:5 + len(names)]
            meta[parts[0]] = (parts[1], [n for n, x in zip(names, flags) if x == "1"])
    return _build(raw[keep, 0].astype(str), raw[keep, 1].astype(str), meta, names, options)


def _read_lightgcn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``user item item ...`` per line -> (users, items) as strings."""
    users, items = [], []
    with _open_text(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) > 1:
                users.extend([parts[0]] * (len(parts) - 1))
                items.extend(parts[1:])
    return np.array(users, dtype=str), np.array(items, dtype=str)


def _load_ml_1m(root: Path, options: LoadOptions) -> Source:
    # The shared copy has every ML-1M rating as an implicit pair (ids = original id - 1) and no
    # rating values, so no rating threshold can be applied (see its PROVENANCE.md).
    u1, i1 = _read_lightgcn(root / "implicit_train.txt")
    u2, i2 = _read_lightgcn(root / "implicit_test.txt")
    meta = {}
    with _open_text(root / "movies.dat") as f:
        for line in f:
            movie_id, title, genres = line.rstrip("\n").split("::")
            meta[str(int(movie_id) - 1)] = (title, genres.split("|"))
    names = sorted({c for _, cs in meta.values() for c in cs})
    return _build(np.concatenate([u1, u2]), np.concatenate([i1, i2]), meta, names, options)


def load_lightgcn_dir(root: Path, options: LoadOptions = LoadOptions()) -> Source:
    """A folder with LightGCN-format ``train.txt`` and ``test.txt``: the given split is kept
    and no filtering is applied (the files are already the published split)."""
    tr_u, tr_i = _read_lightgcn(root / "train.txt")
    te_u, te_i = _read_lightgcn(root / "test.txt")
    data = InteractionData.from_raw(np.concatenate([tr_u, te_u]), np.concatenate([tr_i, te_i]))
    test_keys = set(zip(te_u.tolist(), te_i.tolist()))
    given_test = np.fromiter(
        ((data.user_ids[u], data.item_ids[i]) in test_keys for u, i in zip(data.users, data.items)),
        dtype=bool, count=data.num_interactions)
    return Source(data, given_test)


DATASETS: dict[str, DatasetInfo] = {
    info.name: info for info in [
        DatasetInfo(EMBEDDED, "MovieLens latest-small (2018), ratings >= 4, genres; embedded",
                    ("ratings.csv", "movies.csv"), _load_ml_latest, embedded=True),
        DatasetInfo("ml-100k", "MovieLens 100K, ratings >= 4, genres",
                    ("u.data", "u.item", "u.genre"), _load_ml_100k),
        DatasetInfo("ml-1m", "MovieLens 1M as implicit pairs (no rating values), genres",
                    ("implicit_train.txt", "implicit_test.txt", "movies.dat"), _load_ml_1m),
        DatasetInfo("gowalla", "Gowalla check-ins, the LightGCN/DGCF train/test split",
                    ("train.txt", "test.txt"), load_lightgcn_dir),
    ]
}
