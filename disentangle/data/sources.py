"""Where interaction data comes from: the embedded default and loaders for public datasets.

Every loader returns a :class:`Source`: the interactions as an
:class:`~disentangle.data.InteractionData` and, for datasets published with a fixed split
(LightGCN's ``train.txt``/``test.txt``), a boolean mask of the test interactions.

Only ``ml-latest-small`` ships inside the package (its license allows redistribution under
the same terms; the license text ships beside it). The other MovieLens sets may not be
redistributed: point ``data_dir`` (``--data-dir``) at a folder that holds their original
files, or set ``DISENTANGLE_DATA`` to a folder with one subfolder per dataset.

A user's own file is the dataset ``csv:PATH`` (see :func:`load_csv`). Everything wrong with
such a file is a :class:`DataError` naming the file, the line and the value; merged
duplicates are reported as a warning on the ``disentangle`` logger.
"""
from __future__ import annotations

import codecs
import collections
import csv
import dataclasses
import gzip
import io
import logging
import math
import os
import zlib
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

from .interactions import InteractionData

DATA_ENV = "DISENTANGLE_DATA"
EMBEDDED = "ml-latest-small"
CSV_PREFIX = "csv:"

log = logging.getLogger(__name__)


class DataError(ValueError):
    """An interaction file that cannot be used; the message names the file and the line."""


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
    loader: Callable[[Path, LoadOptions], Source]
    embedded: bool = False


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """Binarisation and filtering applied while loading.

    Args:
        rating_threshold: keep ratings ``>= rating_threshold`` (explicit-rating sets only).
        min_user_interactions: drop users with fewer interactions after binarisation
            (Liang et al. 2018 and MacridVAE use 5).
        delimiter: column separator of a ``csv:`` file (``None``: detect it); one character
            or ``tab``, ``space``, ``comma``, ``semicolon``, ``pipe``.
    """

    rating_threshold: float = 4.0
    min_user_interactions: int = 5
    delimiter: str | None = None


# -- public entry points --------------------------------------------------------------------
def dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding ``name``'s files: ``data_dir`` itself, ``$DISENTANGLE_DATA/name``,
    or the package's embedded copy (for ``csv:PATH``, the file's folder)."""
    if name.startswith(CSV_PREFIX):
        return _csv_path(name).parent
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
    """Load a dataset by name (see :data:`DATASETS`), or a user's file as ``csv:PATH``."""
    if name.startswith(CSV_PREFIX):
        return load_csv(_csv_path(name), options)
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
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}, or "
                         f"csv:PATH for a file of your own")
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


# -- a user's own file -----------------------------------------------------------------------
_DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe", " ": "space"}
_ROLES = ("user", "item", "rating", "timestamp")
_LAYOUT = "user, item and optionally rating and timestamp"


def _csv_path(name: str) -> Path:
    path = name[len(CSV_PREFIX):]
    if not path.strip():
        raise DataError(f"dataset {name!r}: give a file after 'csv:', e.g. csv:ratings.csv")
    return Path(path).expanduser()


def parse_delimiter(value: str) -> str:
    """``--delimiter`` as one character: a character itself, ``\\t``, or a name (``tab``,
    ``space``, ``comma``, ``semicolon``, ``pipe``)."""
    named = {v: k for k, v in _DELIMITER_NAMES.items()} | {"\\t": "\t"}
    d = named.get(value.lower(), value) if isinstance(value, str) else value
    if not isinstance(d, str) or len(d) != 1 or d in "\r\n\"" or d.isalnum():
        raise DataError(f"delimiter {value!r}: expected one character other than a letter, digit, "
                        f"quote or newline, or one of {', '.join(_DELIMITER_NAMES.values())}")
    return d


def load_csv(path: str | os.PathLike, options: LoadOptions = LoadOptions()) -> Source:
    """Read a delimited file of interactions: one row per interaction with the columns user,
    item, and optionally rating and timestamp.

    - Ids may be any strings. Ratings and timestamps must be finite numbers.
    - The delimiter is detected among tab, comma, semicolon, pipe and space unless
      ``options.delimiter`` names it. A file may be gzip-compressed (``.gz``); text is UTF-8
      (a byte-order mark, or UTF-16 with one, is accepted).
    - A first row is a header when its names are recognised (``user``/``userId``,
      ``item``/``movieId``/..., ``rating``, ``timestamp``; columns are then taken by name,
      in any order) or when its rating or timestamp column is not a number (columns by
      position).
    - With a rating column, interactions with ``rating >= options.rating_threshold`` are kept;
      then users with fewer than ``options.min_user_interactions`` are dropped.
    - Repeated (user, item) rows are merged into one interaction (kept when any of its rows
      passes the threshold) and counted in a warning.

    Raises :class:`DataError` naming the file, the line and the value for anything unusable.
    """
    path = Path(path)
    text = _read_text(path)
    if options.delimiter is not None:
        delimiter = parse_delimiter(options.delimiter)
    else:
        delimiter = _sniff_delimiter(path, _lines(text))
    rows = _csv_rows(path, text, delimiter)
    if not rows:
        raise DataError(f"{path}: no rows; expected {_LAYOUT}")
    how = f"delimiter {_DELIMITER_NAMES.get(delimiter, repr(delimiter))}"
    how += "" if options.delimiter is not None else " (detected; give --delimiter to override)"
    first_line, first = rows[0]
    ncols = len(first)
    if ncols < 2 or ncols > 4:
        raise DataError(f"{path}: line {first_line}: {ncols} field{'s' * (ncols != 1)} with "
                        f"{how}; expected 2 to 4 columns: {_LAYOUT}")
    columns = _header_columns(first)
    header = columns is not None or any(not _is_number(f) for f in first[2:])
    if columns is None:
        columns = dict(zip(_ROLES, range(ncols)))
    if header:
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path}: only a header line, no interactions")
    users, items, ratings = [], [], []
    u_col, i_col = columns["user"], columns["item"]
    r_col, t_col = columns.get("rating"), columns.get("timestamp")
    for line, fields in rows:
        if len(fields) != ncols:
            hint = " (a quote opened here is never closed)" if any("\n" in f for f in fields) \
                else ""
            raise DataError(f"{path}: line {line}: {len(fields)} field"
                            f"{'s' * (len(fields) != 1)}, expected {ncols} as on line "
                            f"{first_line}{hint}; {how}")
        user, item = fields[u_col].strip(), fields[i_col].strip()
        for role, value in (("user", user), ("item", item)):
            if not value:
                raise DataError(f"{path}: line {line}: empty {role} id")
            if "\n" in value or "\r" in value:
                raise DataError(f"{path}: line {line}: {role} id spans lines (a quote opened "
                                f"on this line is never closed)")
        if r_col is not None:
            ratings.append(_number(path, line, "rating", fields[r_col]))
        if t_col is not None:
            _number(path, line, "timestamp", fields[t_col])
        users.append(user)
        items.append(item)
    n_rows = len(users)
    duplicates = n_rows - len(set(zip(users, items)))
    if duplicates:
        log.warning(f"{path}: {duplicates} repeated (user, item) row"
                    f"{'s' * (duplicates != 1)} merged: each pair counts as one interaction")
    users_a, items_a = np.array(users, dtype=str), np.array(items, dtype=str)
    if ratings:
        if not math.isfinite(options.rating_threshold):
            raise DataError(f"rating threshold {options.rating_threshold}: expected a finite "
                            f"number (data.rating_threshold, --rating-threshold)")
        keep = np.array(ratings) >= options.rating_threshold
        if not keep.any():
            raise DataError(f"{path}: no interactions left: none of the {n_rows} ratings is "
                            f">= {options.rating_threshold:g} (data.rating_threshold; set it "
                            f"with --rating-threshold)")
        users_a, items_a = users_a[keep], items_a[keep]
    data = InteractionData.from_raw(users_a, items_a)
    kept = data.drop_sparse_users(options.min_user_interactions)
    if kept.num_interactions == 0:
        raise DataError(f"{path}: no interactions left: no user has "
                        f"{options.min_user_interactions} or more interactions"
                        f"{' after the rating threshold' if ratings else ''} ({data.num_users} "
                        f"user{'s' * (data.num_users != 1)}; data.min_user_interactions)")
    return Source(kept)


def _read_text(path: Path) -> str:
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder; expected a file of interactions") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.suffix == ".gz":
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error):
            raise DataError(f"{path}: not a valid gzip file (truncated or not compressed)") \
                from None
    if blob.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = blob.decode("utf-16")
        except UnicodeDecodeError:
            raise DataError(f"{path}: starts like UTF-16 text but does not decode") from None
    else:
        nul = blob.find(b"\0")
        if nul >= 0:
            line = blob.count(b"\n", 0, nul) + 1
            raise DataError(f"{path}: line {line}: binary data (a NUL byte); expected "
                            f"delimited text")
        try:
            text = blob.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = blob.count(b"\n", 0, e.start) + 1
            raise DataError(f"{path}: line {line}: not UTF-8 text (byte 0x{blob[e.start]:02x}); "
                            f"expected delimited text") from None
    if not text.strip():
        raise DataError(f"{path}: empty file; expected rows of {_LAYOUT}")
    return text


def _lines(text: str) -> list[str]:
    """Lines split as the csv module splits them (``\n``, ``\r\n`` or ``\r``)."""
    return [line.rstrip("\r\n") for line in io.StringIO(text, newline="")]


def _split(line: str, delimiter: str) -> list[str]:
    if delimiter == " ":  # any run of blanks separates, as in u.data or LightGCN files
        return line.split()
    try:
        return next(csv.reader([line], delimiter=delimiter, skipinitialspace=True), [])
    except csv.Error:
        return [line]


def _sniff_delimiter(path: Path, lines: list[str]) -> str:
    """The candidate that splits most of the first lines into the same 2 to 4 fields."""
    sample = [line for line in lines if line.strip()][:50]
    best, best_key = None, None
    for rank, d in enumerate(_DELIMITER_NAMES):
        counts = [len(_split(line, d)) for line in sample]
        mode, hits = collections.Counter(counts).most_common(1)[0]
        if mode < 2:
            continue
        key = (2 <= mode <= 4, hits, -rank)
        if best_key is None or key > best_key:
            best, best_key = d, key
    if best is None:
        raise DataError(f"{path}: line 1: one column with each of "
                        f"{', '.join(_DELIMITER_NAMES.values())} as delimiter; expected "
                        f"{_LAYOUT} (give --delimiter)")
    return best


def _csv_rows(path: Path, text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """Non-empty rows with the line each starts on."""
    if delimiter == " ":
        return [(n, fields) for n, line in enumerate(_lines(text), 1)
                if (fields := line.split())]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True)
    rows, start = [], 1
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                rows.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}: line {start}: {e}") from None
    return rows


def _header_columns(fields: list[str]) -> dict[str, int] | None:
    """Column of each role when every field of ``fields`` is a recognised column name."""
    columns: dict[str, int] = {}
    for col, name in enumerate(fields):
        role = _role(name)
        if role is None or role in columns:
            return None
        columns[role] = col
    return columns if {"user", "item"} <= set(columns) else None


_NAMES = {
    "user": {"user", "users", "userid", "uid", "u", "customer", "customerid", "reviewer",
             "reviewerid", "visitor", "visitorid"},
    "item": {"item", "items", "itemid", "iid", "i", "sid", "movie", "movieid", "product",
             "productid", "asin", "book", "bookid", "isbn", "song", "songid", "track", "trackid",
             "artist", "artistid", "business", "businessid", "venue", "venueid", "location",
             "locationid", "poi", "poiid"},
    "rating": {"rating", "ratings", "score", "stars", "value", "r", "preference"},
    "timestamp": {"timestamp", "time", "ts", "t", "date", "datetime", "unixtime",
                  "unixreviewtime"},
}


def _role(name: str) -> str | None:
    """The role of a header name (case, blanks, ``_`` and ``-`` ignored), if it has one."""
    n = "".join(c for c in name.lower() if c.isalnum())
    return next((role for role, names in _NAMES.items() if n in names), None)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number(path: Path, line: int, role: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}: line {line}: {role} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: line {line}: {role} {text.strip()!r} is not a finite number")
    return value


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
