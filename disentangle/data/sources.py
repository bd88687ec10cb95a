"""Where interaction data comes from: the embedded default and loaders for public datasets.

Every loader returns a :class:`Source`: the interactions as an
:class:`~disentangle.data.InteractionData` and, for datasets published with a fixed split
(LightGCN's ``train.txt``/``test.txt``), a boolean mask of the test interactions.

Only ``ml-latest-small`` ships inside the package (its license allows redistribution under
the same terms; the license text ships beside it). The other MovieLens sets may not be
redistributed: ``disentangle download NAME`` (:mod:`disentangle.data.download`) fetches
them into ``$DISENTANGLE_DATA/NAME`` or :func:`data_home`, where they are found by name; or
point ``data_dir`` (``--data-dir``) at a folder that holds their original files.

A user's own data is the dataset ``csv:PATH``, ``recbole:DIR/NAME`` or ``lightgcn:DIR``
(:mod:`disentangle.data.delimited` reads the first two); ``LoadOptions.items`` gives any
dataset the titles and categories of a catalogue file. Everything wrong with
such a file, or with a named dataset's files (a short row, a non-numeric id or rating, binary
data), is a :class:`DataError` naming the file, the line and the value; merged duplicates are
reported as a warning on the ``disentangle`` logger.

Every file is read through :mod:`disentangle.files`: regular files only, sizes capped,
compressed files streamed with a cap on their decompressed size, and each line checked as it
arrives (a NUL byte or a line over :data:`MAX_LINE` bytes stops the read at once, so an
all-zero file is refused after its first block).

``data.delimiter`` (``--delimiter``) and ``data.columns`` (``--columns``) describe a user's
delimited file only: a named dataset has its publisher's fixed format, so giving either with
one is refused rather than ignored.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import os
import re
import sys
from array import array
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import files
from .interactions import InteractionData, PairCodes

DATA_ENV = "DISENTANGLE_DATA"
EMBEDDED = "ml-latest-small"
CSV_PREFIX = "csv:"
RECBOLE_PREFIX = "recbole:"
LIGHTGCN_PREFIX = "lightgcn:"
#: The longest line read from any data file (a LightGCN-format line lists all of a user's
#: items: Gowalla's longest is 5 KiB, ML-1M's 12 KiB).
MAX_LINE = 1 << 20
_CHUNK = 1 << 16
_BAR_BYTES = 1 << 20

log = logging.getLogger(__name__)


class DataError(files.FileError):
    """An interaction file that cannot be used; the message names the file and the line."""


@contextlib.contextmanager
def _as_data_error() -> Iterator[None]:
    """Report :mod:`disentangle.files`' refusals (folder, FIFO, size, bomb) as DataError."""
    try:
        yield
    except DataError:
        raise
    except files.FileError as e:
        raise DataError(str(e)) from None


@dataclasses.dataclass
class Source:
    """A loaded dataset: interactions, the test mask of a dataset's given split, and the
    time of each interaction where the file has one (the latest of a merged pair's rows)."""

    data: InteractionData
    given_test: np.ndarray | None = None
    timestamps: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    files: tuple[str, ...]
    loader: Callable[[Path, LoadOptions], Source]
    embedded: bool = False
    #: Another set of files the loader reads instead (ML-1M: the original ratings.dat, or
    #: the implicit pairs of the shared copy).
    alternative: tuple[str, ...] = ()

    @property
    def layouts(self) -> tuple[tuple[str, ...], ...]:
        return (self.files, self.alternative) if self.alternative else (self.files,)


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """Binarisation and filtering applied while loading.

    Args:
        rating_threshold: keep ratings ``>= rating_threshold`` (explicit-rating sets only).
        min_user_interactions: drop users with fewer interactions after binarisation
            (Liang et al. 2018 and MacridVAE use 5).
        delimiter: column separator of a ``csv:`` file (``None``: detect it); one character
            or ``tab``, ``space``, ``comma``, ``semicolon``, ``pipe``.
        columns: the columns of a ``csv:`` or RecBole file by role,
            ``user=customer_ref,item=item_code[,rating=stars][,timestamp=ts]``.
        items: a catalogue file (id, title, categories separated by ``|``) whose titles and
            categories replace the dataset's own (see :func:`~disentangle.data.delimited.load_items`).
        progress: a progress bar while a user's file loads (``None``: on a terminal).
    """

    rating_threshold: float = 4.0
    min_user_interactions: int = 5
    delimiter: str | None = None
    columns: str | None = None
    items: str | None = None
    progress: bool | None = None

    @classmethod
    def from_config(cls, data) -> LoadOptions:
        """The options a :class:`~disentangle.config.DataConfig` sets."""
        return cls(data.rating_threshold, data.min_user_interactions, data.delimiter,
                   data.columns, data.items)


# -- public entry points --------------------------------------------------------------------
def data_home() -> Path:
    """Where ``disentangle download`` puts datasets when ``$DISENTANGLE_DATA`` is unset:
    ``$XDG_DATA_HOME/disentangle`` (by default ``~/.local/share/disentangle``)."""
    base = os.environ.get("XDG_DATA_HOME") or Path("~/.local/share").expanduser()
    return Path(base) / "disentangle"


def dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding ``name``'s files: ``data_dir`` itself, else
    ``$DISENTANGLE_DATA/name`` or (that unset) ``data_home()/name``, else the package's
    embedded copy (for ``csv:PATH``, the file's folder)."""
    if name.startswith(PREFIXES):
        path = _prefixed_path(name)
        return path if name.startswith(LIGHTGCN_PREFIX) else path.parent
    info = _info(name)
    candidates = []
    if data_dir is not None:
        candidates.append(Path(data_dir))
    elif os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]) / name)
    else:
        candidates.append(data_home() / name)
    if info.embedded and data_dir is None:
        candidates.append(Path(str(resources.files(__package__) / "embedded" / name)))
    for c in candidates:
        if any(all((c / f).exists() or (c / f"{f}.gz").exists() for f in layout)
               for layout in info.layouts):
            return c
    where = ", ".join(str(c) for c in candidates)
    needs = " or ".join(", ".join(layout) for layout in info.layouts)
    raise FileNotFoundError(f"dataset {name!r} needs {needs}; not found in {where} (get it with "
                            f"`disentangle download {name}`, or give --data-dir)")


def load_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 options: LoadOptions = LoadOptions()) -> Source:
    """Load a dataset by name (see :data:`DATASETS`), or a user's own data: ``csv:PATH`` (a
    delimited file), ``recbole:DIR/NAME`` (RecBole atomic files ``NAME.inter`` and, if
    present, ``NAME.item``, in ``DIR/NAME/`` or ``DIR/``) or ``lightgcn:DIR`` (``train.txt``
    and ``test.txt``, the split kept). ``options.items`` then replaces the items' titles and
    categories."""
    from . import delimited

    if name.startswith(PREFIXES):
        path = _prefixed_path(name)
        if name.startswith(CSV_PREFIX):
            source = delimited.load_csv(path, options)
        elif name.startswith(RECBOLE_PREFIX):
            source = delimited.load_recbole(path, options)
        else:
            _fixed_format(name, options)
            source = load_lightgcn_dir(path, options)
    else:
        info = _info(name)
        _fixed_format(name, options)
        source = info.loader(dataset_dir(name, data_dir), options)
    if options.items is not None:
        source.data = delimited.with_items(source.data, Path(options.items).expanduser())
    return source


def _fixed_format(name: str, options: LoadOptions) -> None:
    """A delimiter or column mapping describes a ``csv:`` file only: refused, not ignored."""
    for key, option, value in (("delimiter", "--delimiter", options.delimiter),
                               ("columns", "--columns", options.columns)):
        if value is not None:
            raise DataError(f"data.{key}={value!r} ({option}) applies to a csv:PATH dataset "
                            f"only; {name!r} is read in its fixed format (leave it unset)")


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
                         f"csv:PATH, recbole:DIR/NAME or lightgcn:DIR for data of your own")
    return DATASETS[name]


# -- helpers --------------------------------------------------------------------------------
def _existing(path: Path) -> Path:
    """``path``, or ``path.gz`` when only the compressed copy exists."""
    gz = path.with_name(path.name + ".gz")
    return gz if not path.exists() and gz.exists() else path


def _numbered_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line of a data file (read from ``PATH.gz`` when only
    that exists), line ends removed. A NUL byte, a line longer than :data:`MAX_LINE` or bytes
    that do not decode are a :class:`DataError` naming the line, raised as soon as that line
    is read. A progress bar counts the bytes on a terminal (files of a megabyte or more)."""
    path = _existing(path)
    size = path.stat().st_size if path.is_file() else 0
    with _as_data_error(), files.open_stream(path) as f, \
            tqdm(total=None if files.compression(path) else size, unit="B", unit_scale=True,
                 unit_divisor=1024, desc=path.name, leave=False,
                 disable=size < _BAR_BYTES or not sys.stderr.isatty()) as bar:
        number, pending = 0, 0
        while raw := f.readline(MAX_LINE + 1):
            number += 1
            pending += len(raw)
            if pending >= _BAR_BYTES:
                bar.update(pending)
                pending = 0
            if b"\0" in raw:
                raise DataError(f"{path}: line {number}: binary data (a NUL byte); expected "
                                f"lines of text")
            if len(raw) > MAX_LINE:
                raise DataError(f"{path}: line {number}: longer than {MAX_LINE} bytes; "
                                f"expected lines of text")
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: line {number}: not {encoding} text (byte "
                                f"0x{raw[e.start]:02x})") from None
            yield number, text.rstrip("\r\n")


def _nonempty(path: Path, rows, layout: str):
    """``rows`` read from ``path``; an empty file (or one of blank lines) is a DataError."""
    if not rows:
        raise DataError(f"{_existing(path)}: no rows; expected {layout}")
    return rows


def _bad(path: Path, line: int, problem: str) -> DataError:
    return DataError(f"{_existing(path)}: line {line}: {problem}")


def _fields(path: Path, line: int, parts: list[str], expected: int, layout: str) -> list[str]:
    """``parts`` when there are ``expected`` of them, else a DataError naming the line."""
    if len(parts) != expected:
        raise _bad(path, line, f"{len(parts)} field{'s' * (len(parts) != 1)}, expected "
                               f"{expected}: {layout}")
    return parts


_ID = re.compile(r"[0-9]+", re.ASCII)
_IDS = re.compile(r"\s*[0-9]+(?:\s+[0-9]+)*\s*", re.ASCII)


def _int_id(path: Path, line: int, role: str, text: str) -> int:
    """The value of a non-negative integer id of a published file (ids are kept as spelled;
    this checks them)."""
    if not _ID.fullmatch(text.strip()):
        raise _bad(path, line, f"{role} {text.strip()!r} is not a non-negative integer id")
    return int(text)


def _build(users, items, meta, category_names, options: LoadOptions) -> Source:
    data = InteractionData.from_raw(users, items, item_meta=meta, category_names=category_names)
    return Source(data.drop_sparse_users(options.min_user_interactions))


def _csv_line(text: str) -> list[str]:
    return next(csv.reader([text]), [])


#: A rating row as MovieLens writes it: user and item ids, a rating, a timestamp.
_RATINGS_ROW = re.compile(r"([0-9]+),([0-9]+),([^,]*),[^,]*", re.ASCII)
_U_DATA_ROW = re.compile(r"\s*([0-9]+)\s+([0-9]+)\s+(\S+)\s+\S+\s*", re.ASCII)


def _checked_row(path: Path, line: int, parts: list[str], layout: str, sep: str) -> list[str]:
    """``["", user, item, rating]`` of a rating row that the fast pattern did not match (it
    may still be valid, e.g. quoted); its problem as a DataError otherwise."""
    names = layout.split(sep)
    user, item, rating, _ = _fields(path, line, parts, 4, layout)
    _int_id(path, line, names[0], user)
    _int_id(path, line, names[1], item)
    return ["", user.strip(), item.strip(), rating]


# -- MovieLens ------------------------------------------------------------------------------
def _load_ml_latest(root: Path, options: LoadOptions) -> Source:
    codes, ratings = PairCodes(), array("d")
    path = _existing(root / "ratings.csv")
    for n, line in _numbered_lines(path):
        if n == 1 or not line.strip():  # the header
            continue
        row = _RATINGS_ROW.fullmatch(line) or _checked_row(
            path, n, _csv_line(line), "userId,movieId,rating,timestamp", ",")
        codes.add(row[1], row[2])
        ratings.append(_number(path, n, "rating", row[3]))
    _nonempty(path, ratings, "userId,movieId,rating,timestamp rows after the header")
    keep = np.frombuffer(ratings, dtype=np.float64) >= options.rating_threshold
    meta = {}
    path = _existing(root / "movies.csv")
    for n, line in _numbered_lines(path):
        if n == 1 or not line.strip():
            continue
        movie_id, title, genres = _fields(path, n, _csv_line(line), 3, "movieId,title,genres")
        cats = [] if genres == "(no genres listed)" else genres.split("|")
        _int_id(path, n, "movieId", movie_id)
        meta[movie_id.strip()] = (title, cats)
    _nonempty(path, meta, "movieId,title,genres rows after the header")
    names = sorted({c for _, cs in meta.values() for c in cs})
    users, items = codes.arrays()
    data, _ = codes.data(users[keep], items[keep])
    return Source(data.drop_sparse_users(options.min_user_interactions)
                  .with_item_meta(meta, names))


def _load_ml_100k(root: Path, options: LoadOptions) -> Source:
    users, items, ratings = [], [], []
    path = _existing(root / "u.data")
    for n, line in _numbered_lines(path, "latin-1"):
        if not line.strip():
            continue
        row = _U_DATA_ROW.fullmatch(line) or _checked_row(
            path, n, line.split(), "user item rating timestamp", " ")
        users.append(row[1])
        items.append(row[2])
        ratings.append(_number(path, n, "rating", row[3]))
    _nonempty(path, users, "rows of user item rating timestamp")
    keep = np.array(ratings) >= options.rating_threshold
    path = _existing(root / "u.genre")
    names = _nonempty(path, [_fields(path, n, line.split("|"), 2, "genre|index")[0]
                             for n, line in _numbered_lines(path, "latin-1") if line.strip()],
                      "rows of genre|index")
    meta = {}
    path = _existing(root / "u.item")
    for n, line in _numbered_lines(path, "latin-1"):
        if not line.strip():
            continue
        parts = _fields(path, n, line.split("|"), 5 + len(names),
                        f"id|title|release date|video date|IMDb URL|one flag per genre of "
                        f"u.genre ({len(names)})")
        flags = parts[5:]
        _int_id(path, n, "item", parts[0])
        meta[parts[0].strip()] = (
            parts[1], [g for g, x in zip(names, flags) if x == "1"])
    _nonempty(path, meta, "rows of id|title|...|one flag per genre")
    return _build(np.array(users, dtype=str)[keep], np.array(items, dtype=str)[keep], meta,
                  names, options)


def _read_lightgcn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``user item item ...`` per line (non-negative integer ids) -> (users, items) as
    strings, spelled as in the file; a line with a user and no item is refused as a short
    (cut) row."""
    users, items = [], []
    for n, line in _numbered_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise _bad(path, n, f"user {parts[0]!r} and no item; expected 'user item item "
                                f"...' (a cut line?)")
        if not _IDS.fullmatch(line):
            for k, p in enumerate(parts):
                _int_id(path, n, "user" if k == 0 else "item", p)
        users.extend(parts[:1] * (len(parts) - 1))
        items.extend(parts[1:])
    _nonempty(path, users, "rows of 'user item item ...'")
    return np.array(users, dtype=str), np.array(items, dtype=str)


_RATINGS_DAT_ROW = re.compile(r"([0-9]+)::([0-9]+)::([^:]*)::[0-9]*", re.ASCII)


def _read_ratings_dat(path: Path, options: LoadOptions) -> tuple[np.ndarray, np.ndarray]:
    """ML-1M's ``UserID::MovieID::Rating::Timestamp`` rows rated ``>= rating_threshold``,
    ids minus 1 (as the implicit copy numbers them)."""
    users, items, ratings = [], [], []
    for n, line in _numbered_lines(path, "latin-1"):
        if not line.strip():
            continue
        row = _RATINGS_DAT_ROW.fullmatch(line.strip())
        if row is None:
            raise _bad(path, n, f"{line.strip()[:40]!r}; expected UserID::MovieID::Rating::"
                                f"Timestamp")
        users.append(int(row[1]) - 1)
        items.append(int(row[2]) - 1)
        ratings.append(_number(path, n, "rating", row[3]))
    _nonempty(path, users, "rows of UserID::MovieID::Rating::Timestamp")
    keep = np.array(ratings) >= options.rating_threshold
    return np.array(users)[keep].astype(str), np.array(items)[keep].astype(str)


def _load_ml_1m(root: Path, options: LoadOptions) -> Source:
    if _existing(root / "ratings.dat").exists():  # the original (disentangle download)
        users, items = _read_ratings_dat(_existing(root / "ratings.dat"), options)
    else:
        # The shared copy has every ML-1M rating as an implicit pair (ids = original id - 1)
        # and no rating values, so no rating threshold can be applied (its PROVENANCE.md).
        u1, i1 = _read_lightgcn(root / "implicit_train.txt")
        u2, i2 = _read_lightgcn(root / "implicit_test.txt")
        users, items = np.concatenate([u1, u2]), np.concatenate([i1, i2])
    meta = {}
    path = _existing(root / "movies.dat")
    for n, line in _numbered_lines(path, "latin-1"):
        if not line.strip():
            continue
        movie_id, title, genres = _fields(path, n, line.split("::"), 3,
                                          "MovieID::Title::Genres")
        movie = _int_id(path, n, "MovieID", movie_id)
        if movie < 1:
            raise _bad(path, n, f"MovieID {movie_id!r}: MovieLens ids start at 1")
        meta[str(movie - 1)] = (title, genres.split("|"))
    _nonempty(path, meta, "rows of MovieID::Title::Genres")
    names = sorted({c for _, cs in meta.values() for c in cs})
    return _build(users, items, meta, names, options)


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


# -- a user's own files ----------------------------------------------------------------------
_DECIMAL_COMMA = re.compile(r"\s*[+-]?[0-9]+,[0-9]+\s*", re.ASCII)
#: Prefixes of a dataset that is a user's own file or folder (see :func:`load_dataset`).
PREFIXES = (CSV_PREFIX, RECBOLE_PREFIX, LIGHTGCN_PREFIX)


def _prefixed_path(name: str) -> Path:
    prefix = next(p for p in PREFIXES if name.startswith(p))
    path = name[len(prefix):]
    if not path.strip():
        example = {CSV_PREFIX: "csv:ratings.csv", RECBOLE_PREFIX: "recbole:data/ml-100k",
                   LIGHTGCN_PREFIX: "lightgcn:data/gowalla"}[prefix]
        raise DataError(f"dataset {name!r}: give a path after {prefix!r}, e.g. {example}")
    return Path(path).expanduser()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return "_" not in text  # float() reads "4_5" as 45


def _number(path: Path, line: int, role: str, text: str) -> float:
    if not _is_number(text):
        hint = f": a decimal comma? write {text.strip().replace(',', '.')}" \
            if _DECIMAL_COMMA.fullmatch(text) else ""
        raise DataError(f"{path}: line {line}: {role} {text.strip()!r} is not a number{hint}")
    value = float(text)
    if not math.isfinite(value):
        raise DataError(f"{path}: line {line}: {role} {text.strip()!r} is not a finite number")
    return value


DATASETS: dict[str, DatasetInfo] = {
    info.name: info for info in [
        DatasetInfo(EMBEDDED, "MovieLens latest-small (2018), ratings >= 4, genres; embedded",
                    ("ratings.csv", "movies.csv"), _load_ml_latest, embedded=True),
        DatasetInfo("ml-100k", "MovieLens 100K, ratings >= 4, genres",
                    ("u.data", "u.item", "u.genre"), _load_ml_100k),
        DatasetInfo("ml-1m", "MovieLens 1M, ratings >= 4 (from the implicit copy: every "
                    "rating), genres", ("ratings.dat", "movies.dat"), _load_ml_1m,
                    alternative=("implicit_train.txt", "implicit_test.txt", "movies.dat")),
        DatasetInfo("ml-20m", "MovieLens 20M, ratings >= 4, genres",
                    ("ratings.csv", "movies.csv"), _load_ml_latest),
        DatasetInfo("gowalla", "Gowalla check-ins, the LightGCN/DGCF train/test split",
                    ("train.txt", "test.txt"), load_lightgcn_dir),
        DatasetInfo("yelp2018", "Yelp 2018, the LightGCN/NGCF train/test split",
                    ("train.txt", "test.txt"), load_lightgcn_dir),
        DatasetInfo("amazon-book", "Amazon-book, the LightGCN/NGCF train/test split",
                    ("train.txt", "test.txt"), load_lightgcn_dir),
    ]
}

# A user's files are read by .delimited, which uses the definitions above; split folders
# read their files with its read_text.
from .delimited import read_text

__all__ = ["DATASETS", "DataError", "LoadOptions", "Source", "available", "data_home",
           "dataset_dir", "load_dataset", "load_lightgcn_dir", "read_text"]
