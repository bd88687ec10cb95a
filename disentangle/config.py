"""Run configuration: three sections (``data``, ``model``, ``train``), each a dataclass whose
defaults reproduce the papers. YAML files and ``key=value`` overrides are merged on top and
the resolved config is validated once, before anything is written: types, nulls and
finiteness from each field's type hint, ranges from each section's table of constraints
(:class:`~disentangle.models.base.ConfigSection`). A bad key or value is a one-line
:class:`ConfigError` naming it and what is accepted.

A config file must be a regular file of at most :data:`MAX_CONFIG_BYTES`; it is read with
``yaml.safe_load``: nothing in a config is ever evaluated.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .data import PROTOCOLS
from .files import FileError, FileMissingError, check_regular, read_bytes
from .models import MODELS
from .models.base import (
    FLOAT32_MAX,
    ConfigSection,
    Constraint,
    Interval,
    Items,
    ModelConfig,
    NonBlank,
    Options,
    matches_hint,
    short_repr,
)

#: Largest config file read (a config is a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20
SECTIONS = ("data", "model", "train")
#: Seeds go to numpy and torch: numpy's legacy seeding accepts ``[0, 2**32)``.
SEED = Interval(int, 0, 2 ** 32, closed="left", accepted="an integer in [0, 2**32)")


class ConfigError(ValueError):
    """A config key or value that cannot be used."""


@dataclasses.dataclass
class DataConfig(ConfigSection):
    """Where the interactions come from and how they are split.

    Args:
        dataset: a name from ``disentangle datasets``.
        data_dir: folder with the dataset's raw files (default: embedded copy or
            ``$DISENTANGLE_DATA/<dataset>``).
        split_dir: a ready split in Liang et al.'s format; overrides ``protocol``.
        protocol: ``heldout``, ``ratio``, ``given``, or ``temporal`` (each user's latest
            10% held out for test, the 10% before for validation) or ``temporal-global``
            (one time cut: the latest 10% of all interactions test, the 10% before validate);
            the temporal ones need a timestamp column.
        seed: split seed (Liang et al. use 98765).
        heldout_users: held-out validation (and test) users, a count or a fraction.
        rating_threshold: binarise explicit ratings at ``>=`` this value.
        min_user_interactions: drop users with fewer interactions.
        valid_ratio: share of each user's training items used to validate (``given``); 0
            trains on all of them without validation, keeping the last epoch (a refit once a
            validated run has chosen ``train.epochs``, as LightGCN and DGCF train;
            ``train.patience`` then never stops a run).
        delimiter: column separator of a ``csv:PATH`` dataset (``None``: detected).
        columns: the columns of a ``csv:PATH`` or ``recbole:`` dataset by role,
            ``user=customer_ref,item=item_code[,rating=stars][,timestamp=ts]`` (``None``:
            recognised by their usual names).
        items: a catalogue file (item id, title, categories separated by ``|``) giving the
            items' titles and categories (``None``: the dataset's own, if any).
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
    columns: str | None = None
    items: str | None = None

    constraints: ClassVar[dict[str, tuple[Constraint, ...]]] = {
        "dataset": (NonBlank("a dataset name or csv:PATH"),),
        "data_dir": (NonBlank("a folder path or null"),),
        "split_dir": (NonBlank("a folder path or null"),),
        "protocol": (Options(*PROTOCOLS),),
        "seed": (SEED,),
        "heldout_users": (Interval(int, 1, None, accepted="a count >= 1"),
                          Interval(float, 0, 0.5, closed="neither",
                                   accepted="a fraction in (0, 0.5)")),
        "min_user_interactions": (Interval(int, 1, None),),
        "valid_ratio": (Interval(float, 0, 1, closed="left", accepted="a fraction in [0, 1)"),),
        "items": (NonBlank("a file path or null"),),
    }

    def validate(self) -> None:
        from .data.delimited import parse_columns

        if self.columns is not None:
            try:
                parse_columns(self.columns)
            except ValueError as e:
                raise ValueError(f"columns={short_repr(self.columns)} is out of range: {e}") \
                    from None


@dataclasses.dataclass
class TrainConfig(ConfigSection):
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

    constraints: ClassVar[dict[str, tuple[Constraint, ...]]] = {
        "epochs": (Interval(int, 0, None),),
        # Adam's first step is lr / (1 - beta1) = 10 lr, which must be a float32
        "lr": (Interval(float, 0, FLOAT32_MAX / 10, closed="right",
                        accepted=f"a number in (0, {FLOAT32_MAX / 10:.4g}]"),),
        "lr_milestones": (Items(Interval(int, 1, None), accepted="a list of epochs >= 1"),),
        "lr_gamma": (Interval(float, 0, 1, closed="right"),),
        "weight_decay": (Interval(float, 0, None),),
        "seed": (SEED,),
        # ranked lists are indexed with int32 (scipy's CSR indices)
        "ks": (Items(Interval(int, 1, 2 ** 31, closed="left"), min_len=1,
                     accepted="a non-empty list of cut-offs in [1, 2**31)"),),
        "patience": (Interval(int, 0, None),),
        "eval_every": (Interval(int, 1, None),),
        "eval_chunk": (Interval(int, 1, None),),
    }

    def lr_at(self, epoch: int) -> float:
        """Learning rate of the epoch after ``epoch`` completed ones."""
        return self.lr * self.lr_gamma ** sum(m <= epoch for m in self.lr_milestones)

    def validate(self) -> None:
        names = {f"{metric}@{k}" for metric in ("ndcg", "recall", "recall_liang")
                 for k in self.ks}
        self.check("select", self.select, self.select in names,
                   f"ndcg@k or recall@k with k in {self.ks}")


@dataclasses.dataclass
class RunConfig:
    model_name: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"model": {"name": self.model_name, **dataclasses.asdict(self.model)},
                "data": dataclasses.asdict(self.data), "train": dataclasses.asdict(self.train)}


def _convert(value: Any, hint: Any) -> Any:
    """``value`` converted to the type ``hint`` where that loses nothing (a number written as
    text, ``3.0`` for an int, ``1`` for a float, one item for a list), else unchanged: the
    validator (:meth:`~disentangle.models.base.ConfigSection.validate_all`) then says what
    the field expects."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        arms = [(arm, _convert(value, arm)) for arm in args if arm is not type(None)]
        return next((c for arm, c in arms if matches_hint(c, arm)), arms[0][1])
    if origin is list:
        return [_convert(v, args[0]) for v in (value if isinstance(value, list) else [value])]
    if isinstance(value, bool) or hint not in (int, float):
        return value
    if isinstance(value, str):
        for number in (int, float):
            try:
                return _convert(number(value), hint)
            except ValueError:
                pass
        return value
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if hint is float and isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return value
    return value


class _Text(str):
    """A ``--set`` value: text to read as YAML against its field's type (a YAML file's values
    and typed option values are used as they are)."""


def _parse_text(key: str, text: str, hint: Any) -> Any:
    """A ``--set`` value read as YAML (``20``, ``1e-3``, ``[20, 50]``, ``null``) for a field
    that is not text; text fields keep it verbatim, except ``null`` / ``~`` where the field
    is optional."""
    args, text = typing.get_args(hint), str(text)
    if hint is str:
        return text
    if str in args:
        return None if text.strip() in ("null", "~") else text
    if not text.strip():
        return text
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        raise ConfigError(f"{key}={short_repr(text)}: not a valid value") from None


def _apply(section: str, obj: ConfigSection, values: dict) -> None:
    hints = typing.get_type_hints(type(obj))
    fields = {f.name for f in dataclasses.fields(obj)}
    for name, value in values.items():
        if name not in fields:
            shown = name if isinstance(name, str) and name.isprintable() and len(name) <= 60 \
                else short_repr(name)
            raise ConfigError(f"unknown config key {section}.{shown}; known: "
                              f"{', '.join(sorted(fields))}")
        if isinstance(value, _Text):
            value = _parse_text(f"{section}.{name}", value, hints[name])
        setattr(obj, name, _convert(value, hints[name]))


def flat_keys(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict (as :meth:`RunConfig.to_dict` writes it) by dotted key:
    ``{"model": {"tau": 0.1}}`` -> ``{"model.tau": 0.1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def _load_file(f: str | Path) -> dict:
    """One config file: a regular file of at most :data:`MAX_CONFIG_BYTES`, a YAML mapping."""
    try:
        size = check_regular(f).st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {f}: {size} bytes; a config file is at most "
                              f"{MAX_CONFIG_BYTES} bytes")
        raw = read_bytes(f, max_bytes=MAX_CONFIG_BYTES, decompress=False)
    except FileMissingError:
        raise ConfigError(f"config file {f}: {os.strerror(errno.ENOENT)}") from None
    except FileError as e:
        raise ConfigError(f"config file {e}") from None
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"config file {f}: not valid YAML ({first})") from None
    except RecursionError:
        raise ConfigError(f"config file {f}: not valid YAML (nested too deeply)") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {f}: expected a mapping of sections "
                          f"({', '.join(SECTIONS)})")
    _check_layer(doc, f"config file {f}: ")
    return doc


def _check_layer(layer: dict, where: str = "") -> None:
    """Known section names, each a mapping (or empty)."""
    unknown = [k for k in layer if k not in SECTIONS]
    if unknown:
        raise ConfigError(f"{where}unknown config section {short_repr(unknown[0])}; known: "
                          f"{', '.join(SECTIONS)}")
    for name, section in layer.items():
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"{where}config section {name}={short_repr(section)}: expected "
                              f"a mapping of {name} keys (key: value lines under '{name}:')")


def resolve(model: str | None = None, files: list[str | Path] = (),
            overrides: list[str] = (), options: dict[str, Any] | None = None) -> RunConfig:
    """Build and validate a run config: defaults, then each YAML file, then ``key=value``
    overrides (``data.protocol=ratio``, ``model.num_factors=10``, ``train.epochs=5``), whose
    values are YAML text, then ``options``: values by key as they are, never parsed (a
    command-line option's ``{"data.split_dir": "null"}`` is the folder named ``null``)."""
    layers = [_load_file(f) for f in files]
    sets: dict[str, dict] = {}
    for item in overrides:
        key, eq, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not eq or not dot:
            raise ConfigError(f"--set {short_repr(item)}: expected section.key=value, e.g. "
                              f"model.tau=0.2")
        sets.setdefault(section, {})[name] = _Text(value)
    typed: dict[str, dict] = {}
    for key, value in (options or {}).items():
        section, _, name = key.partition(".")
        typed.setdefault(section, {})[name] = value
    return _merge(model, [*layers, sets, typed])


def _merge(model: str | None, layers: list[dict]) -> RunConfig:
    """Defaults, then each layer ``{"data": {...}, "model": {...}, "train": {...}}``; the
    result is validated as a whole."""
    for layer in layers:
        if not isinstance(layer, dict):
            raise ConfigError(f"config {short_repr(layer)}: expected a mapping of sections "
                              f"({', '.join(SECTIONS)})")
        _check_layer(layer)
    if model is None:  # --model wins; else the last file that names one
        named = [layer["model"]["name"] for layer in layers
                 if isinstance(layer.get("model"), dict) and "name" in layer["model"]]
        model = named[-1] if named else None
    if model is None:
        raise ConfigError("no model given; use --model with one of " + ", ".join(MODELS))
    if not isinstance(model, str) or model not in MODELS:
        raise ConfigError(f"unknown model {short_repr(model)}; known: {', '.join(MODELS)}")
    cfg = RunConfig(model, DataConfig(), MODELS[model].Config(), TrainConfig())
    for layer in [MODELS[model].defaults, *layers]:
        for section in SECTIONS:
            values = dict(layer.get(section) or {})
            if section == "model":
                values.pop("name", None)  # chose the model above
            _apply(section, getattr(cfg, section), values)
    for name in SECTIONS:
        try:
            getattr(cfg, name).validate_all()
        except ValueError as e:
            raise ConfigError(f"{name}.{e}") from None
    return cfg


def from_dict(d: dict[str, Any]) -> RunConfig:
    """Inverse of :meth:`RunConfig.to_dict` (used to reload a run directory)."""
    return _merge(None, [d])
