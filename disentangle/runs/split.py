"""A run's split on disk: ``split.safetensors`` (indices) and ``data.json`` (raw ids, titles).

``split.safetensors`` records a SHA-256 of ``data.json``, so either file edited by hand is
refused on load, and its own checksum is what a run's model checkpoints record of the split.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..data import InteractionData, Split
from ..data.splits import EvalSet
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, read_bytes, save_checkpoint


def save_split(split: Split, split_path: Path, data_path: Path) -> str:
    """Write ``split`` to the two files; return the split checkpoint's SHA-256."""
    t: dict[str, torch.Tensor] = {
        "train.users": torch.from_numpy(split.train.users),
        "train.items": torch.from_numpy(split.train.items)}
    for name in ("valid", "test"):
        es: EvalSet = getattr(split, name)
        t[f"{name}.users"] = torch.from_numpy(np.asarray(es.users, dtype=np.int64))
        for part in ("history", "target"):
            m = getattr(es, part)
            t[f"{name}.{part}.indptr"] = torch.from_numpy(m.indptr.astype(np.int64))
            t[f"{name}.{part}.indices"] = torch.from_numpy(m.indices.astype(np.int64))
    data = split.train
    if data.item_categories is not None:
        t["item_categories"] = torch.from_numpy(np.asarray(data.item_categories, np.float32))
    ids = (json.dumps({
        "user_ids": data.user_ids.tolist(), "item_ids": data.item_ids.tolist(),
        "item_titles": None if data.item_titles is None else [str(x) for x in data.item_titles],
        "category_names": list(data.category_names),
        "item_metadata": split.item_metadata}, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(data_path, ids)
    return save_checkpoint(split_path, t, {"protocol": split.protocol, "seed": split.seed,
                                           "data_sha256": hashlib.sha256(ids).hexdigest()})


def load_split(split_path: Path, data_path: Path) -> tuple[Split, str]:
    """The split saved by :func:`save_split` and its SHA-256, both files verified."""
    t, meta = load_checkpoint(split_path)
    blob = read_bytes(data_path)
    digest = hashlib.sha256(blob).hexdigest()
    if meta.get("data_sha256", digest) != digest:  # runs of 0.1.0 before the digest: unchecked
        raise CheckpointError(f"{data_path}: checksum mismatch (the file was modified)")
    try:
        return _split_from(t, meta, json.loads(blob)), meta["sha256"]
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise CheckpointError(f"{split_path.parent}: {split_path.name} and {data_path.name} do "
                              f"not fit together ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _split_from(t: dict[str, torch.Tensor], meta: dict, d: dict) -> Split:
    cats = t.get("item_categories")
    train = InteractionData(
        t["train.users"].numpy(), t["train.items"].numpy(), np.array(d["user_ids"]),
        np.array(d["item_ids"]),
        None if d["item_titles"] is None else np.array(d["item_titles"], dtype=object),
        None if cats is None else cats.numpy(), d["category_names"])
    m = train.num_items
    if train.num_interactions and (train.users.max() >= train.num_users
                                   or train.items.max() >= m):
        raise ValueError("training pairs index past the ids")

    def eval_set(name: str) -> EvalSet:
        users = t[f"{name}.users"].numpy()

        def rows(part: str) -> sp.csr_matrix:
            indptr = t[f"{name}.{part}.indptr"].numpy()
            indices = t[f"{name}.{part}.indices"].numpy()
            return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr),
                                 shape=(len(users), m))
        return EvalSet(users, rows("history"), rows("target"))

    return Split(train, eval_set("valid"), eval_set("test"), meta["protocol"], meta["seed"],
                 d.get("item_metadata"))
