"""Temporal split protocols: the future is held out, as RecBole's time ordering (``TO``) does.

Both need the time of each interaction (:attr:`~disentangle.data.Source.timestamps`: a
``timestamp`` column of a ``csv:`` or RecBole file). Validation and test evaluate the users
they contain; a test user's history is the user's training and validation interactions.

- :func:`last_per_user_split` — per user, interactions in time order; the last
  ``test_ratio`` share of them (``floor``, as :func:`~disentangle.data.splits.ratio_split`
  counts) is the test set, the ``valid_ratio`` share before it validates, the rest trains.
  With ratios 0.8/0.1/0.1 a user with ``n`` interactions trains on the first
  :math:`\\lfloor 0.8 n \\rfloor` and tests on those after the first
  :math:`\\lfloor 0.9 n \\rfloor`.
- :func:`global_time_split` — one cut for everybody: interactions in global time order, the
  last ``test_ratio`` share is the test set and the ``valid_ratio`` share before it
  validates. No training interaction is later than a validation or test one, so nothing
  from the future leaks into training; users first seen after the cut have no history.

Ties in time are broken by the interaction's index (user, then item: the order of first
appearance), never at random, so a split depends on the data alone.
"""
from __future__ import annotations

import numpy as np

from . import splits
from .sources import DataError, Source
from .splits import Split, _three_way

TEMPORAL_PROTOCOLS = ("temporal", "temporal-global")
#: Every protocol :func:`make_split` applies.
PROTOCOLS = (*splits.PROTOCOLS, *TEMPORAL_PROTOCOLS)


def _times(source: Source) -> np.ndarray:
    if source.timestamps is None:
        raise DataError("a temporal protocol needs the time of each interaction: a timestamp "
                        "column (csv:PATH or recbole:DIR/NAME with one)")
    return source.timestamps


def _check(valid_ratio: float, test_ratio: float) -> None:
    if not (0 <= valid_ratio < 1 and 0 < test_ratio < 1 and valid_ratio + test_ratio < 1):
        raise ValueError(f"valid_ratio={valid_ratio!r}, test_ratio={test_ratio!r}: expected "
                         f"shares with 0 <= valid, 0 < test and valid + test < 1")


def last_per_user_split(source: Source, valid_ratio: float = 0.1,
                        test_ratio: float = 0.1) -> Split:
    """Each user's latest interactions are held out (see the module docstring)."""
    _check(valid_ratio, test_ratio)
    times, users = _times(source), source.data.users
    order = np.lexsort((np.arange(len(users)), times, users))  # by user, then time
    counts = np.bincount(users, minlength=source.data.num_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = np.arange(len(users)) - starts[users[order]]
    n = counts[users]
    n_train = ((1 - valid_ratio - test_ratio) * n + 1e-9).astype(np.int64)
    n_seen = ((1 - test_ratio) * n + 1e-9).astype(np.int64)
    part = np.where(rank < n_train, 0, np.where(rank < n_seen, 1, 2))
    return _three_way(source.data, part, "temporal", None)


def global_time_split(source: Source, valid_ratio: float = 0.1,
                      test_ratio: float = 0.1) -> Split:
    """One time cut for all users (see the module docstring)."""
    _check(valid_ratio, test_ratio)
    times = _times(source)
    e = len(times)
    order = np.lexsort((np.arange(e), times))
    position = np.empty(e, dtype=np.int64)
    position[order] = np.arange(e)
    n_train = int((1 - valid_ratio - test_ratio) * e + 1e-9)
    n_seen = int((1 - test_ratio) * e + 1e-9)
    part = np.where(position < n_train, 0, np.where(position < n_seen, 1, 2))
    return _three_way(source.data, part, "temporal-global", None)


def make_split(source: Source, protocol: str, seed: int | None = None, **options) -> Split:
    """Apply any protocol by name: ``temporal`` (:func:`last_per_user_split`) and
    ``temporal-global`` (:func:`global_time_split`), which draw nothing at random and ignore
    ``seed``, and the random ones of :func:`disentangle.data.splits.make_split`."""
    if protocol == "temporal":
        return last_per_user_split(source, **options)
    if protocol == "temporal-global":
        return global_time_split(source, **options)
    if protocol not in splits.PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    return splits.make_split(source, protocol, seed, **options)
