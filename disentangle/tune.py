"""Hyperparameter search on the validation metric, with `Optuna <https://optuna.org>`_.

A search draws configs from a *search space* (a YAML file mapping ``section.key`` to a
distribution, :func:`load_space`), trains each on one split built once, and keeps the config
whose best validation value of ``train.select`` is highest. Only the validation users are
ever scored: the test users take no part in the search, so the chosen config's test metric
(``disentangle fit --config best.yaml``) is an unbiased estimate.

Each trial maximises

.. math::
    v(\\theta) = \\max_{e \\le E} \\; m_{\\text{valid}}(\\theta, e),

the best validation value of the selection metric ``m`` (``train.select``, e.g.
``ndcg@100``) over the evaluated epochs ``e`` of a run with hyperparameters ``\\theta`` --
the epoch a ``fit`` of that config would restore. The sampler is Optuna's TPE (Bergstra et
al., NeurIPS 2011); a :class:`~optuna.pruners.MedianPruner` stops a trial whose validation
value after epoch ``e`` is below the median of the earlier trials' values after that epoch.

The study lives in an Optuna storage (default ``sqlite:///<out>/study.db``): a killed search
continues where it was by running the same command again, and several machines share one
study through a database URL (``postgresql://...``, ``mysql://...``). ``n_trials`` counts
the study's finished trials (complete, pruned or failed) on every machine together.

Writes into ``out_dir``: ``best.yaml`` (the full config of the best trial, which
``disentangle fit --config`` takes), ``trials.csv`` (one row per trial) and ``trials.png``
(validation value per trial with the running best).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import yaml

import disentangle_configs

from .config import ConfigError, RunConfig, TrainConfig, flat_keys, resolve
from .files import FileError, FileMissingError, check_regular, read_bytes
from .models import MODELS
from .models.base import short_repr
from .runs.checkpoint import atomic_write
from .train import Diverged, Trainer
from .train import run as runs

__all__ = ["SPACES", "Param", "SearchSpaceError", "default_study", "load_space", "parse_space",
           "trials_plot", "tune", "write_outputs"]

#: The search spaces shipped with the package: ``configs/search/<model>.yaml`` in the source
#: tree, installed as package data of ``disentangle_configs``.
SPACES = Path(disentangle_configs.__file__).parent / "search"
#: A search space file is a few hundred bytes.
MAX_SPACE_BYTES = 1 << 20
#: Trials that finish before the pruner compares (a median of fewer says little), and the
#: first epoch at which a trial may be pruned (the steps are epochs; early validation values
#: of a VAE are noisy while its KL weight anneals).
PRUNER = {"n_startup_trials": 5, "n_warmup_steps": 5}
#: Paths that may differ between machines sharing a study.
LOCAL_KEYS = ("data.data_dir", "data.split_dir")
KINDS = ("float", "int", "categorical")


class SearchSpaceError(ConfigError):
    """A search space that cannot be used."""


def _optuna():
    try:
        import optuna
    except ModuleNotFoundError:
        raise ModuleNotFoundError('disentangle tune needs Optuna: pip install '
                                  '"disentangle[tune]"') from None
    return optuna


# -- the search space -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Param:
    """One searched config value: ``key`` (``section.name``) drawn from a ``float`` or
    ``int`` range ``[low, high]`` (``log``: uniform in the logarithm; ``step``: on a grid) or
    from ``choices``. Choices that are not numbers, text, booleans or null (a list of layer
    sizes) are drawn as their YAML text and read back by :meth:`value`."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    @property
    def as_text(self) -> bool:
        return self.kind == "categorical" and not all(
            c is None or isinstance(c, (bool, int, float, str)) for c in self.choices)

    def suggest(self, trial) -> Any:
        """The value drawn for ``trial`` (an :class:`optuna.trial.Trial`)."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log,
                                       step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        if self.as_text:
            return self.value(trial.suggest_categorical(self.key, [_text(c) for c in
                                                                   self.choices]))
        return trial.suggest_categorical(self.key, list(self.choices))

    def value(self, raw: Any) -> Any:
        """The config value of a trial's stored parameter ``raw``."""
        return yaml.safe_load(raw) if self.as_text else raw

    def extremes(self) -> list:
        """The values every config of the space must accept: the bounds, or every choice."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]


def _text(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _fields(model: str) -> dict[str, set[str]]:
    return {"model": {f.name for f in dataclasses.fields(MODELS[model].Config)},
            "train": {f.name for f in dataclasses.fields(TrainConfig)}}


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _param(key: str, spec: Any, fields: dict[str, set[str]]) -> Param:
    """One entry of a space, or :class:`SearchSpaceError` naming ``key``."""
    if not isinstance(key, str) or not key.isprintable():
        raise SearchSpaceError(f"{short_repr(key)}: expected a key section.name, e.g. model.tau")
    section, dot, name = key.partition(".")
    if section == "data" or key == "train.select":
        raise SearchSpaceError(f"{key}: cannot be searched (every trial uses the one split "
                               f"and selection metric of the base config; set it with "
                               f"--config or --set)")
    if not dot or section not in fields:
        raise SearchSpaceError(f"{key}: expected a key section.name with section model or "
                               f"train, e.g. model.tau")
    if name not in fields[section]:
        raise SearchSpaceError(f"{key}: unknown config key; known: "
                               f"{', '.join(sorted(fields[section]))}")
    example = "{float: [0.05, 1.0], log: true}, {int: [2, 12]} or {categorical: [32, 64]}"
    if not isinstance(spec, dict):
        raise SearchSpaceError(f"{key}: expected a distribution such as {example}, got "
                               f"{short_repr(spec)}")
    kinds = [k for k in KINDS if k in spec]
    unknown = [k for k in spec if k not in (*KINDS, "log", "step")]
    if len(kinds) != 1 or unknown:
        what = f"unknown field {short_repr(unknown[0])}" if unknown else \
            f"{'two kinds' if kinds else 'no kind'}"
        raise SearchSpaceError(f"{key}: {what}; expected exactly one of float, int or "
                               f"categorical (with log or step for a range), e.g. {example}")
    kind = kinds[0]
    if kind == "categorical":
        choices = spec["categorical"]
        if not isinstance(choices, list) or not choices or set(spec) != {"categorical"}:
            raise SearchSpaceError(f"{key}: categorical expects a non-empty list of values "
                                   f"(and no log or step), got {short_repr(spec)}")
        return Param(key, kind, choices=tuple(choices))
    bounds, log, step = spec[kind], spec.get("log", False), spec.get("step")
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(map(_number, bounds))):
        raise SearchSpaceError(f"{key}: {kind} expects [low, high], two finite numbers, got "
                               f"{short_repr(bounds)}")
    low, high = bounds
    if kind == "int" and not all(float(b).is_integer() for b in bounds):
        raise SearchSpaceError(f"{key}: int expects integer bounds, got {short_repr(bounds)}")
    if not low < high:
        raise SearchSpaceError(f"{key}: expected low < high, got [{low}, {high}]")
    if not isinstance(log, bool):
        raise SearchSpaceError(f"{key}: log expects true or false, got {short_repr(log)}")
    if log and low <= 0:
        raise SearchSpaceError(f"{key}: log: true needs low > 0, got {low}")
    integral = kind != "int" or _number(step) and float(step).is_integer()
    if step is not None and (log or not _number(step) or step <= 0 or not integral):
        raise SearchSpaceError(f"{key}: step expects a number > 0 (an integer for int), "
                               f"without log: true, got {short_repr(step)}")
    return Param(key, kind, float(low), float(high), log,
                 None if step is None else float(step))


def parse_space(doc: Any, model: str, where: str = "search space") -> list[Param]:
    """The parameters of a search space ``doc`` (``{"model.tau": {"float": [0.05, 1],
    "log": True}, ...}``) for ``model``; a bad entry is a one-line :class:`SearchSpaceError`
    naming ``where`` and the key."""
    if model not in MODELS:
        raise ConfigError(f"unknown model {short_repr(model)}; known: {', '.join(MODELS)}")
    if not isinstance(doc, dict) or not doc:
        raise SearchSpaceError(f"{where}: expected a non-empty mapping of section.key to a "
                               f"distribution, e.g. 'model.tau: {{float: [0.05, 1.0], log: "
                               f"true}}'")
    fields = _fields(model)
    params = []
    for key, spec in doc.items():
        try:
            params.append(_param(key, spec, fields))
        except SearchSpaceError as e:
            raise SearchSpaceError(f"{where}: {e}") from None
    return params


def load_space(path: str | Path, model: str) -> list[Param]:
    """The search space in the YAML file ``path`` (see :func:`parse_space`)."""
    try:
        size = check_regular(path).st_size
        if size > MAX_SPACE_BYTES:
            raise SearchSpaceError(f"search space {path}: {size} bytes; at most "
                                   f"{MAX_SPACE_BYTES}")
        raw = read_bytes(path, max_bytes=MAX_SPACE_BYTES, decompress=False)
        doc = yaml.safe_load(raw)
    except FileMissingError:
        raise SearchSpaceError(f"search space {path}: no such file") from None
    except FileError as e:
        raise SearchSpaceError(f"search space {e}") from None
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SearchSpaceError(f"search space {path}: not valid YAML ({first})") from None
    return parse_space(doc, model, f"search space {path}")


def _check_space(params: Sequence[Param], resolve_with: Callable[[dict], RunConfig],
                 overrides: Sequence[str]) -> None:
    """Every bound and choice is a value the config accepts (so no trial is lost to a typo),
    and no searched key is also fixed with ``--set``."""
    fixed = {item.partition("=")[0].strip() for item in overrides}
    for p in params:
        if p.key in fixed:
            raise SearchSpaceError(f"{p.key}: both searched and set with --set; drop one")
        for value in p.extremes():
            try:
                resolve_with({p.key: value})
            except ConfigError as e:
                raise SearchSpaceError(f"search space {p.key}: the value "
                                       f"{short_repr(value)} is refused by the config "
                                       f"({e})") from None


# -- the search -----------------------------------------------------------------------------
class _PruningTrainer(Trainer):
    """The shared trainer, reporting every validation value to an Optuna trial and stopping
    when the pruner says so."""

    def __init__(self, trial, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trial = trial

    def validate(self) -> dict[str, Any]:
        record = super().validate()
        self.trial.report(record[self.config.select], self.epoch)
        if self.trial.should_prune():
            raise _optuna().TrialPruned(f"pruned after epoch {self.epoch}")
        return record




def _check_study(study, base: RunConfig, params: Sequence[Param]) -> None:
    """A study continued (or shared) must search the same model on the same data, split and
    base settings: its first run stored them."""
    mine = {k: v for k, v in flat_keys(base.to_dict()).items() if k not in LOCAL_KEYS}
    for p in params:  # searched keys take their trials' values
        mine.pop(p.key, None)
    stored = study.user_attrs.get("base")
    if stored is None:
        study.set_user_attr("base", mine)
        return
    differ = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
    if differ:
        shown = ", ".join(f"{k}={short_repr(stored.get(k))}" for k in differ[:3])
        raise ConfigError(f"study {study.study_name!r} was started with another base config "
                          f"({shown}{', ...' if len(differ) > 3 else ''}); give the same "
                          f"--config/--set, or another --study name")


def default_study(cfg: RunConfig) -> str:
    """``<model>-<dataset>``; a ``csv:PATH`` dataset is named by its file name, reduced to
    ``[A-Za-z0-9._-]``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(cfg.data.dataset).name).strip("._") or "data"
    return f"{cfg.model_name}-{name}"


def _finished(study) -> int:
    states = _optuna().trial.TrialState
    return sum(t.state in (states.COMPLETE, states.PRUNED, states.FAIL) for t in study.trials)


def tune(model: str | None, space: str | Path | Sequence[Param], files: Sequence[str | Path] = (),
         overrides: Sequence[str] = (), options: dict[str, Any] | None = None, *,
         n_trials: int = 20, storage: str | None = None, study_name: str | None = None,
         out_dir: str | Path = "tune", seed: int | None = None, timeout: float | None = None,
         device: str | None = None,
         on_trial: Callable[[Any, Any], None] | None = None) -> dict[str, Any]:
    """Search ``space`` for ``model`` (``None``: the one the config files name) on top of the
    base config (``files``, ``overrides``, ``options``, as :func:`~disentangle.config.resolve`
    takes them) and write the outputs.

    Args:
        space: a search space file (:func:`load_space`) or its parameters.
        n_trials: finished trials the study should hold (on every machine sharing it); a
            continued study runs only the missing ones.
        storage: an Optuna storage URL (default ``sqlite:///<out_dir>/study.db``).
        study_name: the study in the storage (default ``<model>-<dataset>``).
        seed: seed of the TPE sampler, offset by the study's trials so far (so a continued
            study does not draw its first configs again); ``None``: not reproducible.
        timeout: stop starting trials after this many seconds.
        device: where trials train (``None``: CUDA when available).
        on_trial: called as ``on_trial(study, frozen_trial)`` after every trial.

    Returns:
        ``study``, ``storage``, ``trials`` (finished), ``select``, ``best`` (number, value, params,
        best_epoch, or ``None`` without a complete trial) and the written ``files``.
    """
    optuna = _optuna()
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials={short_repr(n_trials)}: expected an integer >= 1")
    if timeout is not None and not (_number(timeout) and timeout > 0):
        raise ValueError(f"timeout={short_repr(timeout)}: expected a number of seconds > 0")
    options = dict(options or {})
    files, overrides = list(files), list(overrides)

    def resolve_with(values: dict[str, Any]) -> RunConfig:
        return resolve(model, files, overrides, {**options, **values})

    base = resolve_with({})
    params = list(space) if not isinstance(space, (str, Path)) else \
        load_space(space, base.model_name)
    _check_space(params, resolve_with, overrides)
    device = runs.resolve_device(device)

    split = runs.build_split(base)  # once, for every trial
    if not split.has_validation:
        raise ValueError("the split has no validation users (data.valid_ratio=0), and a "
                         "search selects on validation only; use data.valid_ratio > 0")
    runs._check_protocol(base.model_name, split.protocol)  # once, not in every trial

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    study_name = study_name or default_study(base)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize",
                                load_if_exists=True,
                                pruner=optuna.pruners.MedianPruner(**PRUNER))
    _check_study(study, base, params)
    done = _finished(study)
    study.sampler = optuna.samplers.TPESampler(seed=None if seed is None else seed + done)

    def objective(trial) -> float:
        cfg = resolve_with({p.key: p.suggest(trial) for p in params})
        trainer = _PruningTrainer(trial, runs.build_model(cfg, split), split, cfg.train, None,
                                  device, progress=False)
        result = trainer.fit()
        trial.set_user_attr("best_epoch", result["best_epoch"])
        return result[cfg.train.select]

    states = optuna.trial.TrialState
    callbacks = [optuna.study.MaxTrialsCallback(
        n_trials, states=(states.COMPLETE, states.PRUNED, states.FAIL))]
    if on_trial is not None:
        callbacks.append(on_trial)
    if n_trials > done:
        study.optimize(objective, n_trials=n_trials - done, timeout=timeout,
                       catch=(ConfigError, Diverged), callbacks=callbacks,
                       gc_after_trial=False)
    written = write_outputs(study, params, resolve_with, out)
    best = _best(study)
    return {"study": study_name, "storage": storage, "trials": _finished(study),
            "select": base.train.select,
            "best": None if best is None else {
                "number": best.number, "value": best.value,
                "best_epoch": best.user_attrs.get("best_epoch"),
                "params": _values(best, params)},
            "files": written}


def _best(study):
    states = _optuna().trial.TrialState
    complete = [t for t in study.trials if t.state == states.COMPLETE]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def _values(trial, params: Sequence[Param]) -> dict[str, Any]:
    by_key = {p.key: p for p in params}
    return {k: by_key[k].value(v) if k in by_key else v for k, v in trial.params.items()}


# -- outputs --------------------------------------------------------------------------------
def write_outputs(study, params: Sequence[Param], resolve_with: Callable[[dict], RunConfig],
                  out_dir: str | Path) -> dict[str, Path]:
    """``best.yaml`` (when a trial completed), ``trials.csv`` and ``trials.png`` in
    ``out_dir``; returns their paths."""
    out = Path(out_dir)
    written: dict[str, Path] = {}
    best = _best(study)
    select = None
    if best is not None:
        cfg = resolve_with(_values(best, params))
        select = cfg.train.select
        head = (f"# Best trial of study {study.study_name!r}: trial {best.number}, "
                f"validation {select} = {best.value:.6g} (at epoch "
                f"{best.user_attrs.get('best_epoch')}), out of {len(study.trials)} trials.\n"
                f"# Chosen on the validation users only; the test users were never "
                f"evaluated in the search.\n"
                f"# Train it: disentangle fit --config {out / 'best.yaml'}\n")
        written["best"] = out / "best.yaml"
        atomic_write(written["best"], (head + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
                     .encode())
    written["csv"] = out / "trials.csv"
    atomic_write(written["csv"], _csv(study, params).encode())
    written["plot"] = trials_plot(study, out / "trials.png", select)
    return written


def _last_step(trial) -> int | None:
    return max(trial.intermediate_values) if trial.intermediate_values else None


def _csv(study, params: Sequence[Param]) -> str:
    keys = sorted({p.key for p in params} | {k for t in study.trials for k in t.params})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", "value", "best_epoch", "last_epoch", "seconds",
                     *keys])
    for t in study.trials:
        seconds = t.duration.total_seconds() if t.duration is not None else None
        values = _values(t, params)
        writer.writerow([t.number, t.state.name.lower(), t.value,
                         t.user_attrs.get("best_epoch"), _last_step(t),
                         None if seconds is None else round(seconds, 3),
                         *(_text(values[k]) if isinstance(values.get(k), (list, dict))
                           else values.get(k) for k in keys)])
    return buffer.getvalue()


def trials_plot(study, path: str | Path, select: str | None = None) -> Path:
    """The validation value of every complete trial (dots), of every pruned trial at its
    last evaluation (hollow), and the running best over trial numbers (a step line)."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from .viz.plots import STYLE, _save

    states = _optuna().trial.TrialState
    complete = [t for t in study.trials if t.state == states.COMPLETE]
    pruned = [t for t in study.trials if t.state == states.PRUNED and t.intermediate_values]
    failed = sum(t.state == states.FAIL for t in study.trials)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.4, 3.8), layout="constrained")
        ax = fig.subplots()
        if complete:
            x = np.array([t.number for t in complete])
            y = np.array([t.value for t in complete])
            ax.plot(x, y, "o", ms=5, color="#1f77b4", label="complete")
            ax.step(x, np.maximum.accumulate(y), where="post", color="black", lw=1.2,
                    label="running best")
        if pruned:
            ax.plot([t.number for t in pruned],
                    [t.intermediate_values[_last_step(t)] for t in pruned], "o", ms=5,
                    mfc="none", color="#7f7f7f", label="pruned (last evaluation)")
        ax.set_xlabel("trial")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"validation {select or 'metric'}")
        ax.grid(alpha=0.3)
        if complete or pruned:
            ax.legend(frameon=False)
        best = _best(study)
        title = f"study {study.study_name}: {len(study.trials)} trials"
        if failed:
            title += f", {failed} failed"
        if best is not None:
            title += f"; best {best.value:.4f} (trial {best.number})"
        ax.set_title(title)
        return _save(fig, path)
