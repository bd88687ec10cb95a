"""A run from config to run directory, and back.

A run directory holds everything needed to evaluate, explain and resume without the raw data:

==================  ============================================================
``config.yaml``     the resolved config
``data.json``       raw user/item ids, titles, category names, protocol and seed
``split.safetensors``  training pairs, validation/test history and targets, categories
``metrics.jsonl``   one record per epoch
``best.safetensors``   the best model by validation, or the last one without validation
                    (``last.safetensors``: resumable)
``results.json``    final validation (if any) and test metrics of the model and of popularity
==================  ============================================================

Nothing is written outside the run directory, and every file is written atomically.
``split.safetensors`` records a SHA-256 of ``data.json``, so either file edited by hand is
refused on load.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import yaml

from .. import __version__
from ..config import RunConfig, TrainConfig, from_dict
from ..data import InteractionData, LoadOptions, Split, load_dataset, load_split_dir, make_split
from ..data.splits import EvalSet
from ..metrics.ranking import evaluate, popularity_scorer
from ..models import MODELS
from ..models.base import FactorRecommender
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint, write_json
from .trainer import BEST, Trainer

SPLIT, DATA, CONFIG, RESULTS = "split.safetensors", "data.json", "config.yaml", "results.json"

log = logging.getLogger(__name__)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`fit`. ``saved_epoch`` is the epoch whose checkpoint is kept in
    ``run_dir``; ``fit(..., resume=True)`` continues from there."""

    def __init__(self, run_dir: Path, saved_epoch: int | None, epochs: int) -> None:
        self.run_dir, self.saved_epoch, self.epochs = run_dir, saved_epoch, epochs
        super().__init__("nothing is saved yet" if saved_epoch is None else
                         f"the checkpoint of epoch {saved_epoch} of {epochs} is kept in {run_dir}")


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    return torch.device(device)


def build_split(cfg: RunConfig) -> Split:
    """Load the configured dataset and apply the configured protocol (or ready split)."""
    d = cfg.data
    options = LoadOptions(d.rating_threshold, d.min_user_interactions, d.delimiter)
    if d.split_dir is not None:
        try:
            catalog = load_dataset(d.dataset, d.data_dir, options).data
        except FileNotFoundError:
            catalog = None  # titles and genres are optional for a ready split
        return load_split_dir(d.split_dir, catalog)
    source = load_dataset(d.dataset, d.data_dir, options)
    extra: dict[str, Any] = {}
    if d.protocol == "heldout":
        h = d.heldout_users
        extra["heldout_users"] = int(h) if h >= 1 else float(h)
    elif d.protocol == "given":
        extra["valid_ratio"] = d.valid_ratio
    if d.protocol == "heldout":
        _check_heldout_size(d.dataset, source.data, extra["heldout_users"])
    split = make_split(source, d.protocol, d.seed, **extra)
    _check_split(d.dataset, source.data, split,
                 refit=d.protocol == "given" and d.valid_ratio == 0)
    return split


def _check_heldout_size(name: str, data: InteractionData, heldout: float) -> None:
    n = data.num_users
    h = round(heldout * n) if isinstance(heldout, float) else int(heldout)
    if h < 1 or 2 * h >= n:
        raise ValueError(f"dataset {name} is too small for the heldout protocol: {n} user"
                         f"{'s' * (n != 1)} after filtering, and data.heldout_users={heldout} "
                         f"holds out {h} validation and {h} test users; the protocol needs at "
                         f"least 1 of each and 1 training user (change data.heldout_users or "
                         f"use --protocol ratio)")


def _check_split(name: str, data: InteractionData, split: Split, refit: bool) -> None:
    """A split every metric can be computed on (with ``refit``, no validation set), or a
    one-line error naming the sizes."""
    sizes = (f"{split.train.num_interactions} training interactions, {len(split.valid)} "
             f"validation and {len(split.test)} test users")
    usable = split.train.num_interactions and (split.has_validation or refit) and len(split.test)
    if not usable:
        most = int(data.user_degree().max(initial=0))
        raise ValueError(f"dataset {name} is too small for the {split.protocol} protocol: it "
                         f"leaves {sizes} ({data.num_users} users with at most {most} "
                         f"interactions each, {data.num_items} items)")
    for part in ("test",) if refit else ("valid", "test"):
        es = getattr(split, part)
        if es.num_without_target == len(es):
            raise ValueError(f"dataset {name} is too small for the {split.protocol} protocol: "
                             f"none of its {len(es)} {part} users has target items ({sizes})")
    missing = split.valid.num_without_target
    if missing:
        log.warning(f"{missing} of {len(split.valid)} validation users have no target items "
                    f"(too few interactions); they count as 0 in every validation mean")


def _check_protocol(model_name: str, protocol: str) -> None:
    cls = MODELS[model_name]
    if protocol == "heldout" and not cls.supports_new_users:
        raise ValueError(f"model {cls.name!r} cannot score users unseen in training; use "
                         f"data.protocol=ratio or given")


def build_model(cfg: RunConfig, split: Split) -> FactorRecommender:
    cls = MODELS[cfg.model_name]
    _check_protocol(cfg.model_name, split.protocol)
    torch.manual_seed(cfg.train.seed)
    return cls(cfg.model, split.train)


# -- saving and loading a run --------------------------------------------------------------
def save_split(split: Split, run_dir: Path) -> None:
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
        "category_names": list(data.category_names)}, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(run_dir / DATA, ids)
    save_checkpoint(run_dir / SPLIT, t, {"protocol": split.protocol, "seed": split.seed,
                                         "data_sha256": hashlib.sha256(ids).hexdigest()})


def load_split(run_dir: Path) -> Split:
    t, meta = load_checkpoint(run_dir / SPLIT)
    try:
        blob = (run_dir / DATA).read_bytes()
    except OSError as e:
        raise CheckpointError(f"{run_dir / DATA}: cannot read ({e.strerror})") from None
    digest = hashlib.sha256(blob).hexdigest()
    if meta.get("data_sha256", digest) != digest:  # runs of 0.1.0 before the digest: unchecked
        raise CheckpointError(f"{run_dir / DATA}: checksum mismatch (the file was modified)")
    try:
        return _split_from(t, meta, json.loads(blob))
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise CheckpointError(f"{run_dir}: {SPLIT} and {DATA} do not fit together "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                              ) from None


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

    return Split(train, eval_set("valid"), eval_set("test"), meta["protocol"], meta["seed"])


def read_config(run_dir: Path) -> RunConfig:
    """The resolved config of a run directory, checked to come from a compatible version."""
    if not (run_dir / CONFIG).is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (no {CONFIG})")
    try:
        raw = yaml.safe_load((run_dir / CONFIG).read_text())
    except OSError as e:
        raise CheckpointError(f"{run_dir / CONFIG}: cannot read ({e.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise CheckpointError(f"{run_dir / CONFIG}: not valid YAML") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise CheckpointError(f"{run_dir / CONFIG}: not a disentangle run config")
    version = raw.pop("version", None)
    if str(version).split(".")[:2] != __version__.split(".")[:2]:
        raise CheckpointError(f"{run_dir}: written by disentangle {version}, this is "
                              f"{__version__}; re-run fit with this version")
    cls = MODELS.get(raw["model"].get("name"))
    if cls is not None:
        raw["model"] = {**cls.saved_run_defaults, **raw["model"]}
    try:
        return from_dict(raw)
    except ValueError as e:
        raise CheckpointError(f"{run_dir / CONFIG}: {e}") from None


@dataclasses.dataclass
class Run:
    """A loaded run directory: its config, its split and its best model."""

    path: Path
    config: RunConfig
    split: Split
    model: FactorRecommender
    best_epoch: int


def load_run(run_dir: str | Path, device: str | None = "cpu") -> Run:
    """Load a run directory written by :func:`fit` with its best model."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    split = load_split(run_dir)
    model = MODELS[cfg.model_name](cfg.model, split.train)
    if not (run_dir / BEST).exists():
        raise CheckpointError(f"{run_dir}: no {BEST} (the run stopped before its first "
                              f"evaluation; continue it with fit --resume)")
    tensors, meta = load_checkpoint(run_dir / BEST)
    if meta.get("model") != cfg.model_name:
        raise CheckpointError(f"{run_dir / BEST}: holds a {meta.get('model')!r} model, the "
                              f"config names {cfg.model_name!r}")
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{run_dir / BEST}: does not match the config "
                              f"({str(e).splitlines()[0]})") from None
    model.to(resolve_device(device)).eval()
    return Run(run_dir, cfg, split, model, int(meta.get("epoch", 0)))


# -- the whole run -------------------------------------------------------------------------
def final_results(model: FactorRecommender, split: Split, train: TrainConfig,
                  best_epoch: int) -> dict[str, Any]:
    """Validation (if any) and test metrics of ``model`` and of popularity."""
    device = next(model.parameters()).device
    pop = popularity_scorer(split.train, device)
    model.eval()

    def both(score) -> dict[str, Any]:
        return {name: evaluate(score, getattr(split, name), train.ks, train.eval_chunk, device)
                for name in ("valid", "test") if len(getattr(split, name))}

    return {"protocol": split.protocol, "best_epoch": best_epoch, **both(model.score),
            "popularity": both(pop)}


def fit(cfg: RunConfig, run_dir: str | Path, device: str | None = None, progress: bool = True,
        resume: bool = False, on_start: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``; with ``resume``, continue the run saved there (``cfg``
    is then that run's config, from :func:`read_config`).

    The data, split and model are built before anything is written, so a bad input leaves no
    run directory behind. A resumed run killed before its split was saved rebuilds it (the
    split is seeded); one killed before its first checkpoint starts from epoch 0. Ctrl-C
    raises :class:`RunInterrupted`; the last completed epoch stays saved. ``on_start(run_dir)``
    is called once the run directory exists, before training.
    """
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    if cfg.data.split_dir is None:
        _check_protocol(cfg.model_name, cfg.data.protocol)  # before the slow part
    saved_split = resume and (run_dir / SPLIT).exists()
    split = load_split(run_dir) if saved_split else build_split(cfg)
    model = build_model(cfg, split)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / CONFIG, yaml.safe_dump(
        {**cfg.to_dict(), "version": __version__}, sort_keys=False).encode())
    if not saved_split:
        save_split(split, run_dir)
    if on_start is not None:
        on_start(run_dir)
    trainer = Trainer(model, split, cfg.train, run_dir, dev, progress)
    try:
        if resume:
            trainer.resume()
        trainer.fit()
        results = final_results(model, split, cfg.train, trainer.best_epoch)
        write_json(run_dir / RESULTS, results)
    except KeyboardInterrupt:
        raise RunInterrupted(run_dir, trainer.saved_epoch, cfg.train.epochs) from None
    return results
