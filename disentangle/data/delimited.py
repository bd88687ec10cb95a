"""A user's own files: delimited interactions (``csv:PATH``), RecBole atomic files
(``recbole:DIR/NAME``) and an item catalogue (``--items PATH``).

Files are **streamed**: read in blocks through :mod:`disentangle.files`, decoded
incrementally, split into rows by :mod:`csv`, and each row's ids turned into integer codes
as it arrives (one dictionary entry per distinct id, eight bytes per code), so memory grows
with the number of distinct users and items, not with the file's text. A progress bar counts
the bytes read when standard error is a terminal.

**Columns.** The roles are ``user``, ``item``, ``rating`` and ``timestamp``. A header row is
read by name: the names in :data:`NAMES` (case, blanks, ``_`` and ``-`` ignored, a RecBole
``:type`` suffix dropped), or any name given by a column mapping (``--columns
user=customer_ref,item=item_code``, ``data.columns``); other columns are ignored. A first row
that holds no number but text where a rating or timestamp would be is a header: when its
names do not give both a user and an item column, the file is refused with the columns it
saw (it is never read by position, which would take a timestamp column for the users).
Without a header, the 2 to 4 columns are user, item, rating, timestamp by position.
"""
from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import itertools
import logging
import math
import os
import re
import sys
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import files
from .interactions import InteractionData, PairCodes
from .sources import (
    _CHUNK,
    _DECIMAL_COMMA,
    MAX_LINE,
    DataError,
    LoadOptions,
    Source,
    _as_data_error,
    _is_number,
    _number,
)

log = logging.getLogger(__name__)

DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe", " ": "space"}
#: Detection prefers, among delimiters that split the lines equally well, the one least
#: likely to occur inside a field: a comma is the decimal mark of many locales (whose files
#: are therefore ;-delimited) and occurs in titles, a space in names.
_SNIFF_ORDER = ("\t", ";", "|", ",", " ")
ROLES = ("user", "item", "rating", "timestamp")
_LAYOUT = "user, item and optionally rating and timestamp"
_RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
_NL = b"\n"
DEFAULTS = LoadOptions()

NAMES = {
    "user": {"user", "users", "userid", "uid", "u", "customer", "customerid", "reviewer",
             "reviewerid", "visitor", "visitorid"},
    "item": {"item", "items", "itemid", "iid", "i", "sid", "movie", "movieid", "product",
             "productid", "sku", "asin", "book", "bookid", "isbn", "song", "songid", "track", "trackid",
             "artist", "artistid", "business", "businessid", "venue", "venueid", "location",
             "locationid", "poi", "poiid"},
    "rating": {"rating", "ratings", "score", "stars", "value", "r", "preference"},
    "timestamp": {"timestamp", "time", "ts", "t", "date", "datetime", "unixtime",
                  "unixreviewtime"},
}


# -- options --------------------------------------------------------------------------------
def parse_delimiter(value: str) -> str:
    """``--delimiter`` as one character: a character itself, ``\\t``, or a name (``tab``,
    ``space``, ``comma``, ``semicolon``, ``pipe``)."""
    named = {v: k for k, v in DELIMITER_NAMES.items()} | {"\\t": "\t"}
    d = named.get(value.lower(), value) if isinstance(value, str) else value
    if not isinstance(d, str) or len(d) != 1 or d in "\r\n\"" or d.isalnum():
        raise DataError(f"delimiter {value!r}: expected one character other than a letter, digit, "
                        f"quote or newline, or one of {', '.join(DELIMITER_NAMES.values())}")
    return d


def parse_columns(text: str) -> dict[str, str]:
    """``user=customer_ref,item=item_code,rating=stars,timestamp=ts`` as ``{role: column}``;
    a role may be left out (then found by its usual names). Bad text is a ValueError."""
    mapping: dict[str, str] = {}
    for part in text.split(","):
        role, eq, name = (s.strip() for s in part.partition("="))
        if not eq or role not in ROLES or not name:
            raise ValueError(f"columns {text!r}: expected role=column pairs separated by "
                             f"commas, roles among {', '.join(ROLES)}, e.g. "
                             f"user=customer_ref,item=item_code")
        if role in mapping:
            raise ValueError(f"columns {text!r}: role {role} given twice")
        mapping[role] = name
    if len(set(mapping.values())) != len(mapping):
        raise ValueError(f"columns {text!r}: one column named for two roles")
    return mapping


# -- streamed text ---------------------------------------------------------------------------
def text_lines(path: Path, progress: bool | None = None) -> Iterator[str]:
    """The lines of a user's text file, line ends kept (``\\n``, ``\\r\\n`` or ``\\r``),
    decoded incrementally (UTF-8, a byte-order mark or UTF-16 with one accepted). A NUL byte,
    a line longer than :data:`MAX_LINE` or bytes that do not decode are a :class:`DataError`
    naming the line as soon as its block is read (an all-zero file stops after one block)."""
    size = None if files.compression(path) else path.stat().st_size if path.is_file() else None
    newlines, run, carry = 0, 0, ""
    with _as_data_error(), files.open_stream(path) as f, \
            tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=path.name,
                 leave=False, disable=(not sys.stderr.isatty()) if progress is None
                 else not progress) as bar:
        chunk = f.read(_CHUNK)
        utf16 = chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        decoder = codecs.getincrementaldecoder("utf-16" if utf16 else "utf-8-sig")()
        while True:
            final = not chunk
            if not utf16 and (nul := chunk.find(b"\0")) >= 0:
                raise DataError(f"{path}: line {newlines + chunk.count(_NL, 0, nul) + 1}: "
                                f"binary data (a NUL byte); expected delimited text")
            end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
            run = run + len(chunk) if end < 0 else len(chunk) - end - 1
            if run > MAX_LINE * (2 if utf16 else 1):
                raise DataError(f"{path}: line {newlines + chunk.count(_NL) + 1}: longer "
                                f"than {MAX_LINE} bytes; expected delimited text")
            try:
                text = decoder.decode(chunk, final)
            except UnicodeDecodeError as e:
                if utf16:
                    raise DataError(f"{path}: starts like UTF-16 text but does not decode") \
                        from None
                at = max(0, min(e.start, len(chunk) - 1))
                raise DataError(f"{path}: line {newlines + chunk.count(_NL, 0, at) + 1}: "
                                f"not UTF-8 text (byte 0x{e.object[e.start]:02x}); expected "
                                f"delimited text") from None
            newlines += chunk.count(b"\n")
            bar.update(len(chunk))
            lines = io.StringIO(carry + text, newline="").readlines()
            # the last line may continue in the next block (a "\r" may be half of "\r\n")
            carry = lines.pop() if lines and not final and (
                not lines[-1].endswith("\n")) else ""
            yield from lines
            if final:
                return
            chunk = f.read(_CHUNK)


def read_text(path: Path, expected: str = f"rows of {_LAYOUT}") -> str:
    """The decoded text of a (small) file, checked as :func:`text_lines` checks it; an empty
    file is a :class:`DataError` saying that ``expected`` was expected."""
    text = "".join(text_lines(Path(path), progress=False))
    if not text.strip():
        raise DataError(f"{path}: empty file; expected {expected}")
    return text


def _split(line: str, delimiter: str) -> list[str]:
    if delimiter == " ":  # any run of blanks separates, as in u.data or LightGCN files
        return line.split()
    try:
        return next(csv.reader([line], delimiter=delimiter, skipinitialspace=True), [])
    except csv.Error:
        return [line]


def _sniff_delimiter(path: Path, lines: list[str], candidates=_SNIFF_ORDER) -> str:
    """The candidate that splits most of the first lines into the same 2 to 4 fields (or,
    failing that, into the same number of fields)."""
    sample = [line for line in lines if line.strip()][:50]
    best, best_key = None, None
    for rank, d in enumerate(candidates):
        counts = [len(_split(line.rstrip("\r\n"), d)) for line in sample]
        mode, hits = Counter(counts).most_common(1)[0]
        if mode < 2:
            continue
        key = (2 <= mode <= 4, hits, -rank)
        if best_key is None or key > best_key:
            best, best_key = d, key
    if best is None:
        raise DataError(f"{path}: line 1: one column with each of "
                        f"{', '.join(n for c, n in DELIMITER_NAMES.items() if c in candidates)} as "
                        f"delimiter; "
                        f"expected {_LAYOUT} (give --delimiter)")
    return best


def _rows(path: Path, lines: Iterable[str], delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Non-empty rows with the line each starts on."""
    if delimiter == " ":
        for n, line in enumerate(lines, 1):
            if fields := line.split():
                yield n, fields
        return
    reader = csv.reader(lines, delimiter=delimiter, skipinitialspace=True)
    start = 1
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                yield start, fields
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}: line {start}: {e}") from None


def _open_rows(path: Path, delimiter: str | None, progress: bool | None,
               candidates=_SNIFF_ORDER, what: str = _LAYOUT):
    """``(rows, delimiter, how)``: the rows of ``path`` (an iterator) and how they are split."""
    lines = text_lines(path, progress)
    head = list(itertools.islice(lines, 50))
    if not "".join(head).strip():
        raise DataError(f"{path}: empty file; expected rows of {what}")
    if delimiter is not None:
        d = parse_delimiter(delimiter)
    else:
        d = _sniff_delimiter(path, head, candidates)
    how = f"delimiter {DELIMITER_NAMES.get(d, repr(d))}"
    how += "" if delimiter is not None else " (detected; give --delimiter to override)"
    return _rows(path, itertools.chain(head, lines), d), d, how


# -- columns --------------------------------------------------------------------------------
def _name(header: str) -> str:
    """A header name without a RecBole ``:type`` suffix."""
    base, colon, kind = header.strip().rpartition(":")
    return base if colon and kind in _RECBOLE_TYPES else header.strip()


def role_of(header: str, names: dict[str, set[str]] = NAMES) -> str | None:
    """The role of a header name (case, blanks, ``_`` and ``-`` ignored), if it has one."""
    n = "".join(c for c in _name(header).lower() if c.isalnum())
    return next((role for role, known in names.items() if n in known), None)


def _seen(fields: list[str]) -> str:
    return ", ".join(repr(f) for f in fields)


_HOW_TO_NAME = ("name them with --columns user=NAME,item=NAME[,rating=NAME][,timestamp=NAME] "
                "(data.columns)")


def _header_columns(path: Path, line: int, fields: list[str], mapping: dict[str, str] | None,
                    names: dict[str, set[str]] = NAMES, required: tuple[str, ...] = ("user", "item"),
                    strict: bool = True) -> dict[str, int] | None:
    """Column of each role when ``fields`` is a header (``None``: the row is data). With a
    ``mapping`` the row must be a header holding every mapped name; ``strict``: a row that
    looks like a header without the ``required`` names is an error."""
    plain = [_name(f) for f in fields]
    columns: dict[str, int] = {}
    for role, name in (mapping or {}).items():
        hits = [k for k, f in enumerate(plain) if f == name] or \
            [k for k, f in enumerate(plain) if f.casefold() == name.casefold()]
        if not hits:
            raise DataError(f"{path}: line {line}: no column {name!r} (--columns {role}={name}); "
                            f"the header has {_seen(fields)}")
        columns[role] = hits[0]
    for k, f in enumerate(fields):
        role = role_of(f, names)
        if role is None or k in columns.values():
            continue
        if role in columns:
            if mapping and role in mapping:
                continue  # the mapping chose among same-role columns
            raise DataError(f"{path}: line {line}: columns {fields[columns[role]]!r} and {f!r} "
                            f"both look like the {role}; the header has {_seen(fields)}; "
                            f"{_HOW_TO_NAME}")
        columns[role] = k
    looks_like_header = mapping or not any(_is_number(f) for f in fields)
    if looks_like_header and all(r in columns for r in required):
        return columns
    if mapping or (strict and looks_like_header and any(
            not _is_number(f) and not _DECIMAL_COMMA.fullmatch(f) for f in fields[2:])):
        missing = [r for r in required if r not in columns]
        raise DataError(f"{path}: line {line}: a header whose columns ({_seen(fields)}) give no "
                        f"{' and no '.join(missing)} column; {_HOW_TO_NAME}")
    return None


# -- interactions ---------------------------------------------------------------------------
def load_csv(path: str | os.PathLike, options: LoadOptions = DEFAULTS) -> Source:
    """Read a delimited file of interactions: one row per interaction with a user, an item,
    and optionally a rating and a timestamp (see the module docstring for the columns).

    - Ids may be any strings. Ratings and timestamps must be finite numbers.
    - The delimiter is detected among tab, semicolon, pipe, comma and space (preferred in
      that order when several split the lines equally well) unless ``options.delimiter``
      names it. A file may be compressed (``.gz``, ``.bz2``, ``.xz``, a one-file ``.zip``;
      see :mod:`disentangle.files` for the size limits); text is UTF-8 (a byte-order mark,
      or UTF-16 with one, is accepted).
    - Numbers use a decimal point: a rating written ``4,5`` is refused with a hint (in a
      comma-delimited file it would otherwise split into two columns).
    - With a rating column, interactions with ``rating >= options.rating_threshold`` are kept;
      then users with fewer than ``options.min_user_interactions`` are dropped.
    - Repeated (user, item) rows are merged into one interaction (kept when any of its rows
      passes the threshold) and counted in a warning.

    Raises :class:`DataError` naming the file, the line and the value for anything unusable.
    """
    path = Path(path)
    mapping = parse_columns(options.columns) if options.columns else None
    rows, delimiter, how = _open_rows(path, options.delimiter, options.progress)
    first_line, first = next(rows, (0, []))
    ncols = len(first)
    if ncols < 2:
        raise DataError(f"{path}: line {first_line}: {ncols} field{'s' * (ncols != 1)} with "
                        f"{how}; expected 2 or more columns: {_LAYOUT}")
    columns = _header_columns(path, first_line, first, mapping)
    header = columns is not None
    if columns is None:
        if ncols > 4:
            raise DataError(f"{path}: line {first_line}: {ncols} fields with {how} and no "
                            f"header; expected 2 to 4 columns: {_LAYOUT} (or a header naming "
                            f"them)")
        columns = dict(zip(ROLES, range(ncols)))
        rows = itertools.chain([(first_line, first)], rows)
    elif unused := [f for k, f in enumerate(first) if k not in columns.values()]:
        log.warning(f"{path}: columns {_seen(unused)} are not used")
    codes = PairCodes()
    ratings, stamps, digits_only, n_rows = array("d"), array("d"), True, 0
    u_col, i_col = columns["user"], columns["item"]
    r_col, t_col = columns.get("rating"), columns.get("timestamp")
    for line, fields in rows:
        if len(fields) != ncols:
            hint = " (a quote opened here is never closed)" if any("\n" in f for f in fields) \
                else " (a number with a decimal comma, such as 4,5? write 4.5)" \
                if delimiter == "," and abs(len(fields) - ncols) == 1 else ""
            raise DataError(f"{path}: line {line}: {len(fields)} field"
                            f"{'s' * (len(fields) != 1)}, expected {ncols} as on line "
                            f"{first_line}{hint}; {how}")
        user, item = fields[u_col].strip(), fields[i_col].strip()
        if not user or not item or _LINE_END.search(user) or _LINE_END.search(item):
            _refuse_ids(path, line, user, item)
        if r_col is not None:
            value = _finite(fields[r_col])
            ratings.append(_number(path, line, "rating", fields[r_col]) if value is None
                           else value)
        if t_col is not None:
            stamp = fields[t_col].strip()
            value = _finite(stamp)
            stamps.append(_number(path, line, "timestamp", stamp) if value is None else value)
            digits_only = digits_only and len(stamp) == 1 and stamp.isdigit()
        codes.add(user, item)
        n_rows += 1
        if n_rows == 1:
            first_data = fields
    if not n_rows:
        raise DataError(f"{path}: only a header line, no interactions")
    if not header and delimiter == "," and r_col is not None and t_col is not None \
            and digits_only:
        raise DataError(f"{path}: line {first_line}: the 4th column (a timestamp by position) "
                        f"holds single digits only, as ratings written with a decimal comma "
                        f"split in two ({_seen(first_data)}): write 4.5, not 4,5, or quote "
                        f"the ratings")
    users, items = codes.arrays()
    times = np.frombuffer(stamps, dtype=np.float64) if t_col is not None else None
    duplicates = n_rows - len(np.unique(users.astype(np.int64) * len(codes.items) + items))
    if duplicates:
        log.warning(f"{path}: {duplicates} repeated (user, item) row"
                    f"{'s' * (duplicates != 1)} merged: each pair counts as one interaction")
    if r_col is not None:
        if not math.isfinite(options.rating_threshold):
            raise DataError(f"rating threshold {options.rating_threshold}: expected a finite "
                            f"number (data.rating_threshold, --rating-threshold)")
        keep = np.frombuffer(ratings, dtype=np.float64) >= options.rating_threshold
        if not keep.any():
            raise DataError(f"{path}: no interactions left: none of the {n_rows} ratings is "
                            f">= {options.rating_threshold:g} (data.rating_threshold; set it "
                            f"with --rating-threshold)")
        if not keep.all():
            users, items = users[keep], items[keep]
            times = None if times is None else times[keep]
        del keep
    data, times = codes.data(users, items, times)
    kept = data.drop_sparse_users(options.min_user_interactions)
    if kept.num_interactions == 0:
        raise DataError(f"{path}: no interactions left: no user has "
                        f"{options.min_user_interactions} or more interactions"
                        f"{' after the rating threshold' if r_col is not None else ''} "
                        f"({data.num_users} user{'s' * (data.num_users != 1)}; "
                        f"data.min_user_interactions){_delimiter_hint(data.user_ids, delimiter)}")
    if times is not None:  # drop_sparse_users keeps the rows of the kept users, in order
        times = times[(data.user_degree() >= options.min_user_interactions)[data.users]]
    return Source(kept, timestamps=times)


_LINE_END = re.compile("[\r\n]")


def _finite(text: str) -> float | None:
    """``float(text)`` when that is a finite number written plainly, else ``None`` (then
    :func:`~disentangle.data.sources._number` says what is wrong)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value - value == 0 and "_" not in text else None


def _refuse_ids(path: Path, line: int, user: str, item: str) -> None:
    for role, value in (("user", user), ("item", item)):
        if not value:
            raise DataError(f"{path}: line {line}: empty {role} id")
        if _LINE_END.search(value):
            raise DataError(f"{path}: line {line}: {role} id spans lines (a quote opened on "
                            f"this line is never closed)")


def _delimiter_hint(ids: np.ndarray, delimiter: str) -> str:
    """A hint when most ids hold another candidate delimiter (the detected one was wrong)."""
    for d in _SNIFF_ORDER:
        if d != delimiter and d != " " and (np.char.find(ids.astype(str), d) >= 0).mean() > 0.5:
            example = next(str(x) for x in ids if d in str(x))
            return (f"; most user ids contain {DELIMITER_NAMES[d]} ({example!r}): is that the "
                    f"delimiter? give --delimiter {DELIMITER_NAMES[d]}")
    return ""


# -- RecBole atomic files -------------------------------------------------------------------
def load_recbole(path: str | os.PathLike, options: LoadOptions = DEFAULTS) -> Source:
    """RecBole's atomic files for dataset ``NAME``: ``NAME.inter`` (tab-separated, a typed
    header such as ``user_id:token item_id:token rating:float timestamp:float``) and, when
    present, ``NAME.item`` (``item_id:token``, a title column and a ``token_seq`` column of
    categories separated by spaces, e.g. ``class:token_seq``). ``path`` is ``DIR/NAME``: the
    files are looked for in the folder ``DIR/NAME/`` (RecBole's layout), then in ``DIR/``.
    The interactions are read as :func:`load_csv` reads them (tab-separated unless
    ``options.delimiter`` says otherwise)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    inter = folder / f"{path.name}.inter"
    if not inter.exists():
        raise DataError(f"{path}: no {path.name}.inter in {folder}; expected RecBole atomic "
                        f"files (DIR/NAME/NAME.inter or DIR/NAME.inter)")
    delimiter = options.delimiter if options.delimiter is not None else "\t"
    source = load_csv(inter, dataclasses.replace(options, delimiter=delimiter))
    item = folder / f"{path.name}.item"
    if item.exists():
        source.data = source.data.with_item_meta(
            read_items(item, delimiter="\t", separator=None))
    return source


# -- item catalogues ------------------------------------------------------------------------
ITEM_NAMES = {
    "item": NAMES["item"] | {"id"},
    "title": {"title", "name", "movietitle", "booktitle", "itemname", "productname"},
    "categories": {"categories", "category", "genres", "genre", "class", "classes", "tags"},
}
_NO_CATEGORY = {"(no genres listed)"}


def read_items(path: str | os.PathLike, delimiter: str | None = None,
               separator: str | None = "|") -> dict[str, tuple[str, list[str]]]:
    """An item catalogue: ``{raw item id: (title, [category, ...])}``.

    One row per item: id, title, and optionally its categories joined by ``separator``
    (``|`` as in MovieLens; ``None``: blanks, as in RecBole's ``token_seq``). A header naming
    the columns (``id``/``itemId``/``movieId``..., ``title``/``name``, ``genres``/
    ``categories``/``class``; RecBole's ``:type`` suffixes dropped) maps them in any order;
    without one the columns are taken in that order. The delimiter is detected among tab,
    semicolon and comma unless given. A repeated id is a :class:`DataError`.
    """
    path = Path(path)
    rows, _, how = _open_rows(path, delimiter, False, ("\t", ";", ","),
                              "item id, title and categories")
    first_line, first = next(rows, (0, []))
    columns = _header_columns(path, first_line, first, None, ITEM_NAMES, ("item", "title"),
                              strict=False)
    if columns is None:
        columns = dict(zip(("item", "title", "categories"), range(min(len(first), 3))))
        rows = itertools.chain([(first_line, first)], rows)
    if "title" not in columns:
        raise DataError(f"{path}: line {first_line}: {len(first)} field with {how}; expected "
                        f"item id, title and optionally categories")
    i_col, t_col, c_col = columns["item"], columns["title"], columns.get("categories")
    meta: dict[str, tuple[str, list[str]]] = {}
    lines: dict[str, int] = {}
    for line, fields in rows:
        if len(fields) <= max(columns.values()):
            raise DataError(f"{path}: line {line}: {len(fields)} field"
                            f"{'s' * (len(fields) != 1)}; expected item id, title"
                            f"{' and categories' if c_col is not None else ''} ({how})")
        item = fields[i_col].strip()
        if not item:
            raise DataError(f"{path}: line {line}: empty item id")
        if item in lines:
            raise DataError(f"{path}: line {line}: item {item!r} repeats line {lines[item]}")
        lines[item] = line
        raw = fields[c_col] if c_col is not None else ""
        cats = [c.strip() for c in (raw.split(separator) if separator else raw.split())]
        meta[item] = (fields[t_col].strip(),
                      [c for c in cats if c and c not in _NO_CATEGORY])
    if not meta:
        raise DataError(f"{path}: no items; expected rows of item id, title and categories")
    return meta


def with_items(data: InteractionData, path: Path) -> InteractionData:
    """``data`` with the titles and categories of the catalogue at ``path`` (see
    :func:`read_items`); items it does not list keep their ids as titles (a warning counts
    them). A catalogue that lists none of the data's items is a :class:`DataError`."""
    meta = read_items(path)
    missing = int(sum(i not in meta for i in data.item_ids))
    if missing == data.num_items:
        raise DataError(f"{path}: none of the dataset's {data.num_items} items is listed (its "
                        f"ids look like {', '.join(repr(i) for i in data.item_ids[:3])}; the "
                        f"file's like {', '.join(repr(i) for i in list(meta)[:3])})")
    if missing:
        log.warning(f"{path}: {missing} of the dataset's {data.num_items} items are not "
                    f"listed: they keep their ids as titles and have no category")
    return data.with_item_meta(meta)
