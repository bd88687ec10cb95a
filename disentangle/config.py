"""Run configuration: three sections (``data``, ``model``, ``train``), each a dataclass whose
defaults reproduce the papers. YAML files and ``key=value`` overrides are merged on top and
validated up front; a bad key or value is a one-line :class:`ConfigError` naming it.

YAML is read with ``yaml.safe_load``: nothing in a config is ever evaluated.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from .models import MODELS
from .models.base import ModelConfig


class ConfigError(ValueError):
    """A config key or value that cannot be used."""


@dataclasses.dataclass
class DataConfig:
    """Where the interactions come from and how they are split.

    Args:
        dataset: a name from ``disentangle datasets``.
        data_dir: folder with the dataset's raw files (default: embedded copy or
            ``$DISENTANGLE_DATA/<dataset>``).
        split_dir: a ready split in Liang et al.'s format; overrides ``protocol``.
        protocol: ``heldout``, ``ratio`` or ``given``.
        seed: split seed (Liang et al. use 98765).
        heldout_users: held-out validation (and test) users, a count or a fraction.
        rating_threshold: binarise explicit ratings at ``>=`` this value.
        min_user_interactions: drop users with fewer interactions.
        valid_ratio: share of each user's training items used to validate (``given``); 0
            trains on all of them without validation, keeping the last epoch (a refit once a
            validated run has chosen ``train.epochs``, as LightGCN and DGCF train;
            ``train.patience`` then never stops a run).
        delimiter: column separator of a ``csv:PATH`` dataset (``None``: detected).
    """

    dataset: str = "ml-latest-small"
    data_dir: str | None = None
    split_dir: str | None = None
    protocol: str = "heldout"
    seed: int = 98765
    heldout_users: float = 0.1
    rating_threshold: float = 4.0
    min_user_interactions: int = 5
    valid_ratio: float = 0.1
    delimiter: str | None = None

    def validate(self) -> None:
        ModelConfig.check("protocol", self.protocol,
                          self.protocol in ("heldout", "ratio", "given"),
                          "heldout, ratio or given")
        ModelConfig.check("heldout_users", self.heldout_users, self.heldout_users > 0,
                          "a count >= 1 or a fraction in (0, 0.5)")
        ModelConfig.check("min_user_interactions", self.min_user_interactions,
                          self.min_user_interactions >= 1, "an integer >= 1")
        ModelConfig.check("valid_ratio", self.valid_ratio, 0 <= self.valid_ratio < 1,
                          "a fraction in [0, 1)")


@dataclasses.dataclass
class TrainConfig:
    """Optimisation and model selection.

    Args:
        epochs: passes over the training data.
        lr: Adam learning rate.
        lr_milestones: epochs after which the learning rate is multiplied by ``lr_gamma`` (a
            step schedule; it depends on the epoch alone, so a resumed run follows it too).
        lr_gamma: the factor applied at each milestone.
        weight_decay: Adam weight decay (the models add their own regularisers).
        seed: seeds parameter initialisation, batching and sampling.
        ks: cut-offs reported in every evaluation.
        select: validation metric that picks the best epoch (restored for the test).
        patience: stop after this many evaluations without improvement (0: never stop early).
        eval_every: evaluate every this many epochs.
        eval_chunk: users scored at once during evaluation (bounds memory).
    """

    epochs: int = 200
    lr: float = 1e-3
    lr_milestones: list[int] = dataclasses.field(default_factory=list)
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    seed: int = 98765
    ks: list[int] = dataclasses.field(default_factory=lambda: [20, 50, 100])
    select: str = "ndcg@100"
    patience: int = 0
    eval_every: int = 1
    eval_chunk: int = 1024

    def lr_at(self, epoch: int) -> float:
        """Learning rate of the epoch after ``epoch`` completed ones."""
        return self.lr * self.lr_gamma ** sum(m <= epoch for m in self.lr_milestones)

    def validate(self) -> None:
        ModelConfig.check("epochs", self.epochs, self.epochs >= 0, "an integer >= 0")
        ModelConfig.check("lr", self.lr, self.lr > 0, "a number > 0")
        ModelConfig.check("lr_milestones", self.lr_milestones,
                          all(isinstance(m, int) and m >= 1 for m in self.lr_milestones),
                          "a list of epochs >= 1")
        ModelConfig.check("lr_gamma", self.lr_gamma, 0 < self.lr_gamma <= 1,
                          "a number in (0, 1]")
        ModelConfig.check("patience", self.patience, self.patience >= 0, "an integer >= 0")
        ModelConfig.check("eval_every", self.eval_every, self.eval_every >= 1,
                          "an integer >= 1")
        ModelConfig.check("ks", self.ks, bool(self.ks) and min(self.ks) >= 1,
                          "a list of cut-offs >= 1")
        metric, _, k = self.select.partition("@")
        ModelConfig.check("select", self.select,
                          metric in ("ndcg", "recall", "recall_liang") and k.isdigit()
                          and int(k) in self.ks, f"ndcg@k or recall@k with k in {self.ks}")


@dataclasses.dataclass
class RunConfig:
    model_name: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"model": {"name": self.model_name, **dataclasses.asdict(self.model)},
                "data": dataclasses.asdict(self.data), "train": dataclasses.asdict(self.train)}


def _coerce(section: str, field: dataclasses.Field, value: Any, hint: Any) -> Any:
    """Convert ``value`` (from YAML or a ``--set`` string) to the field's type."""
    key = f"{section}.{field.name}"
    args = typing.get_args(hint)
    if isinstance(value, str) and str in args:  # optional text: only YAML's null is None
        value = None if value.strip() in ("null", "~") else value
    elif isinstance(value, str) and hint is not str:
        try:
            value = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError:
            raise ConfigError(f"{key}={value!r}: not a valid value") from None
    if value is None:
        return None
    target = hint
    if args:  # Optional[X] / X | None / list[X]
        origin = typing.get_origin(hint)
        if origin is list:
            if not isinstance(value, list):
                value = [value]
            return [_coerce(section, field, v, args[0]) for v in value]
        target = next(a for a in args if a is not type(None))
    try:
        if target is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if target is int and isinstance(value, float) and not value.is_integer():
            raise TypeError
        if target is float and isinstance(value, bool):
            raise TypeError
        return target(value)
    except (TypeError, ValueError):
        expected = getattr(target, "__name__", target)
        raise ConfigError(f"{key}={value!r}: expected {expected}") from None


def _apply(section: str, obj: Any, values: dict[str, Any]) -> None:
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for name, value in values.items():
        if name not in fields:
            raise ConfigError(f"unknown config key {section}.{name}; known: "
                              f"{', '.join(sorted(fields))}")
        setattr(obj, name, _coerce(section, fields[name], value, hints[name]))


def resolve(model: str | None = None, files: list[str | Path] = (),
            overrides: list[str] = ()) -> RunConfig:
    """Build and validate a run config: defaults, then each YAML file, then ``key=value``
    overrides (``data.protocol=ratio``, ``model.num_factors=10``, ``train.epochs=5``)."""
    layers: list[dict] = []
    for f in files:
        try:
            text = Path(f).read_text()
        except OSError as e:
            raise ConfigError(f"config file {f}: {e.strerror}") from None
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise ConfigError(f"config file {f}: not valid YAML ({first})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"config file {f}: expected a mapping of sections")
        layers.append(doc)
    sets: dict[str, dict] = {}
    for item in overrides:
        key, eq, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not eq or not dot:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. model.tau=0.2")
        sets.setdefault(section, {})[name] = value
    layers.append(sets)
    return _merge(model, layers)


def _merge(model: str | None, layers: list[dict]) -> RunConfig:
    """Defaults, then each layer ``{"data": {...}, "model": {...}, "train": {...}}``."""
    for layer in layers:
        unknown = set(layer) - {"data", "model", "train"}
        if unknown:
            raise ConfigError(f"unknown config section {min(unknown)!r}; "
                              f"known: data, model, train")
    if model is None:  # --model wins; else the last file that names one
        named = [layer["model"]["name"] for layer in layers
                 if isinstance(layer.get("model"), dict) and "name" in layer["model"]]
        model = named[-1] if named else None
    if model is None:
        raise ConfigError("no model given; use --model with one of " + ", ".join(MODELS))
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    cfg = RunConfig(model, DataConfig(), MODELS[model].Config(), TrainConfig())
    for layer in [MODELS[model].defaults, *layers]:
        for section in ("data", "model", "train"):
            values = dict(layer.get(section) or {})
            values.pop("name", None)
            _apply(section, getattr(cfg, section), values)
    for name in ("data", "model", "train"):
        try:
            getattr(cfg, name).validate()
        except ValueError as e:
            raise ConfigError(f"{name}.{e}") from None
    return cfg


def from_dict(d: dict[str, Any]) -> RunConfig:
    """Inverse of :meth:`RunConfig.to_dict` (used to reload a run directory)."""
    return _merge(None, [d])
