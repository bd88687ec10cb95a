"""``disentangle tune``: hyperparameter search on the validation metric (:mod:`disentangle.tune`).

Register in :mod:`disentangle_cli.main`, at its end beside ``inspect``::

    from .tune import tune_command
    main.add_command(tune_command)

The command wraps itself in ``friendly_errors``. Torch, Optuna and the library are imported
inside the command, so importing this module stays cheap.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import DEVICE, friendly_errors

__all__ = ["tune_command"]


class MissingExtra(click.ClickException):
    """An optional dependency is not installed (bad usage of this install: exit code 2)."""

    exit_code = 2


def _study_line(study, trial) -> str:
    """One line per finished trial: its state and value, and the best so far."""
    states = type(trial.state)
    what = {states.COMPLETE: f"{trial.value:.4f}",
            states.PRUNED: f"pruned after epoch {max(trial.intermediate_values, default=0)}",
            states.FAIL: "failed"}.get(trial.state, trial.state.name.lower())
    try:
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:  # no complete trial yet
        best = "no complete trial yet"
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in trial.params.items())
    return f"trial {trial.number}: {what}; {best}  [{params}]"


@click.command("tune")
@click.option("--model", "model", type=str, default=None,
              help="Model to tune (macridvae, disengcn, ease, multvae, ...); or model.name in "
                   "--config.")
@click.option("--space", type=click.Path(dir_okay=False), default=None,
              help="Search space YAML (section.key: {float|int|categorical: ...}); default: "
                   "configs/search/<model>.yaml of the source tree.")
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="Finished trials the study should hold (a continued or shared study runs "
                   "only the missing ones).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Start no trial after this many seconds.")
@click.option("--storage", type=str, default=None,
              help="Optuna storage URL shared by every machine of the search (default: "
                   "sqlite:///OUT/study.db).")
@click.option("--study", "study_name", type=str, default=None,
              help="Study name in the storage (default: <model>-<dataset>).")
@click.option("--seed", type=int, default=None,
              help="Sampler seed (reproducible draws; give each machine its own).")
@click.option("--config", "configs", multiple=True, type=click.Path(dir_okay=False),
              help="Base YAML config file(s), applied in order on top of the model's "
                   "defaults; the space's keys are drawn on top.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one base config value, e.g. --set train.epochs=50 (repeatable).")
@click.option("--dataset", type=str, default=None,
              help="Dataset name or csv:PATH (data.dataset; default ml-latest-small).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder with the dataset's raw files (data.data_dir).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for study.db, best.yaml, trials.csv and trials.png "
                   "(default: tune/<study>).")
@DEVICE
@click.option("--quiet", is_flag=True, help="No line per trial.")
@friendly_errors
def tune_command(model, space, trials, timeout, storage, study_name, seed, configs, overrides,
                 dataset, data_dir, out, device, quiet):
    """Search hyperparameters on the validation metric (train.select) with Optuna.

    Every trial trains on one split, built once, and is scored on its validation users only;
    the test users are never evaluated. A killed search continues with the same command.
    Writes OUT/best.yaml (for `disentangle fit --config`), trials.csv and trials.png.
    """
    try:
        import optuna  # noqa: F401
    except ModuleNotFoundError:
        raise MissingExtra('disentangle tune needs Optuna: pip install '
                           '"disentangle[tune]"') from None
    from disentangle.config import resolve
    from disentangle.runs import resolve_device
    from disentangle.tune import SPACES, SearchSpaceError, default_study, tune

    resolve_device(device)  # a bad --device before anything else
    options = {key: value for key, value in (("data.dataset", dataset),
                                             ("data.data_dir", data_dir)) if value is not None}
    base = resolve(model, list(configs), list(overrides), options)
    if space is None:
        space = SPACES / f"{base.model_name}.yaml"
        if not space.is_file():
            raise SearchSpaceError(f"no search space shipped for model {base.model_name!r} "
                                   f"({space}); give one with --space FILE")
    out = Path(out) if out else Path("tune") / (study_name or default_study(base))

    def report(study, trial) -> None:
        click.echo(_study_line(study, trial), err=True)

    try:
        result = tune(model, space, list(configs), list(overrides), options, n_trials=trials,
                      storage=storage, study_name=study_name, out_dir=out, seed=seed,
                      timeout=timeout, device=device, on_trial=None if quiet else report)
    except KeyboardInterrupt:
        click.echo(f"interrupted: the study keeps its finished trials in "
                   f"{storage or out / 'study.db'}; the same command continues it", err=True)
        sys.exit(130)
    best = result["best"]
    click.echo(f"study {result['study']} ({result['trials']} finished trials) in "
               f"{result['storage']}")
    if best is None:
        click.echo("no trial completed: no best.yaml written")
    else:
        values = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        click.echo(f"best: trial {best['number']}, validation {result['select']} "
                   f"{best['value']:.4f} "
                   f"(epoch {best['best_epoch']}): {values}")
        click.echo(f"config: {result['files']['best']}  (train it: disentangle fit --config "
                   f"{result['files']['best']})")
    click.echo(f"trials: {result['files']['csv']}, {result['files']['plot']}")
