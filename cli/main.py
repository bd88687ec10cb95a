"""The ``disentangle`` command line.

Thin by design: it parses options, calls :mod:`disentangle`, and prints. Torch and PyG are
imported inside the commands so ``disentangle --help`` answers at once. Every expected
failure is one line on stderr with a non-zero exit code (2 for bad usage); ``--debug``
shows the traceback instead.
"""
from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import click

USAGE_ERRORS = ("ConfigError", "ValueError", "FileNotFoundError", "IsADirectoryError",
                "NotADirectoryError", "PermissionError", "CheckpointError", "UnknownUser")


class UnknownUser(click.ClickException):
    exit_code = 2


def friendly_errors(fn):
    """Turn the library's expected exceptions into one line and an exit code."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as e:
            if ctx.find_root().params.get("debug"):
                raise
            kind = type(e).__name__
            msg = str(e) if not isinstance(e, OSError) or not e.filename else \
                f"{e.filename}: {e.strerror}"
            click.echo(f"error: {msg}", err=True)
            sys.exit(2 if kind in USAGE_ERRORS else 1)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="disentangle")
def main(debug: bool) -> None:
    """Disentangled representations for recommendation: MacridVAE and DisenGCN."""


@main.command()
@click.option("--model", "model", type=str, default=None,
              help="Model to train: macridvae or disengcn (or model.name in --config).")
@click.option("--dataset", type=str, default=None,
              help="Dataset name (see `disentangle datasets`); default ml-latest-small, embedded.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder with the dataset's raw files (else $DISENTANGLE_DATA/<dataset>).")
@click.option("--split-dir", type=click.Path(file_okay=False), default=None,
              help="Ready split in Liang et al.'s format (train.csv, test_tr.csv, ...).")
@click.option("--protocol", type=click.Choice(["heldout", "ratio", "given"]), default=None,
              help="Split protocol: held-out users, per-user ratio, or the dataset's own split.")
@click.option("--config", "configs", multiple=True, type=click.Path(dir_okay=False),
              help="YAML config file(s), applied in order on top of the model's defaults.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config value, e.g. --set model.tau=0.2 (repeatable).")
@click.option("--epochs", type=int, default=None, help="Training epochs (train.epochs).")
@click.option("--seed", type=int, default=None, help="Training seed (train.seed).")
@click.option("--device", type=str, default="auto", show_default=True,
              help="cpu, cuda, cuda:N or auto (CUDA when available).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory to create (default: runs/<model>-<dataset>-<time>).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True),
              default=None, help="Continue the killed run in this directory.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@friendly_errors
def fit(model, dataset, data_dir, split_dir, protocol, configs, overrides, epochs, seed, device,
        out, resume_dir, quiet):
    """Train a model and report held-out test metrics next to popularity."""
    from disentangle.config import resolve
    from disentangle.train.run import fit as run_fit

    sets = list(overrides)
    for key, value in (("data.dataset", dataset), ("data.data_dir", data_dir),
                       ("data.split_dir", split_dir), ("data.protocol", protocol),
                       ("train.epochs", epochs), ("train.seed", seed)):
        if value is not None:
            sets.append(f"{key}={value}")
    if resume_dir is not None:
        from disentangle.train.run import read_config

        run_dir = Path(resume_dir)
        cfg = read_config(run_dir)
        if epochs is not None:
            cfg.train.epochs = epochs
    else:
        cfg = resolve(model, list(configs), sets)
        run_dir = Path(out) if out else Path("runs") / (
            f"{cfg.model_name}-{cfg.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
        if run_dir.exists() and any(run_dir.iterdir()):
            raise click.UsageError(f"--out {run_dir}: exists and is not empty (use --resume "
                                   f"to continue a run)")
    click.echo(f"run directory: {run_dir}", err=True)
    results = run_fit(cfg, run_dir, device, progress=not quiet, resume=resume_dir is not None)
    click.echo(results_table(results, cfg.model_name, cfg.train.ks))


def results_table(results: dict, model: str, ks) -> str:
    """The final test metrics of the model beside popularity, with the recall definition."""
    test, pop = results["test"], results["popularity"]["test"]
    liang = results["protocol"] == "heldout"
    recall = "recall_liang" if liang else "recall"
    definition = "hits / min(k, |test|) (Liang et al.)" if liang else "hits / |test|"
    rows = [f"ndcg@{k}" for k in ks] + [f"{recall}@{k}" for k in ks]
    lines = [f"test metrics ({results['protocol']} protocol, {test['users']} users; best epoch "
             f"{results['best_epoch']} by validation); Recall@k = {definition}"]
    if test["users_without_target"]:
        lines.append(f"note: {test['users_without_target']} test user(s) without target items "
                     f"count as 0 in every mean (as the MacridVAE authors' code counts them)")
    width = max(len(model), 10)
    lines.append(f"{'metric':<18}{model:>{width}}  {'popularity':>10}")
    for r in rows:
        label = r.replace("recall_liang", "recall")
        lines.append(f"{label:<18}{test[r]:>{width}.4f}  {pop[r]:>10.4f}")
    return "\n".join(lines)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--device", type=str, default="cpu", show_default=True, help="cpu or cuda.")
@friendly_errors
def evaluate(run_dir, device):
    """Re-evaluate the best model of RUN_DIR on its validation and test users."""
    from disentangle.train.run import final_results, load_run

    run = load_run(run_dir, device)
    click.echo(results_table(final_results(run.model, run.split, run.config.train,
                                           run.best_epoch), run.config.model_name,
                             run.config.train.ks))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--user", "user", required=True, help="Raw user id, as in the dataset.")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Number of recommendations.")
@friendly_errors
def recommend(run_dir, user, k):
    """Top-k items for a user, with titles and the factor each comes from."""
    from disentangle.explain import recommend as recommend_items
    from disentangle.train.run import load_run

    run = load_run(run_dir)
    try:
        recs = recommend_items(run, user, k)
    except KeyError:
        raise UnknownUser(f"unknown user id {user!r} in {run_dir} "
                          f"({run.split.train.num_users} users)") from None
    click.echo(f"top {k} for user {user} ({recs['history_size']} known items):")
    click.echo(f"{'rank':>4}  {'factor':>6} {'share':>5}  title")
    for r, row in enumerate(recs["items"], 1):
        click.echo(f"{r:>4}  {row['factor']:>6} {row['share']:>5.2f}  {row['title']}")


@main.command()
@friendly_errors
def datasets():
    """List the datasets this toolkit knows, where they were found, and their counts."""
    from disentangle.data import available, load_dataset

    for row in available():
        if row["path"] is None:
            click.echo(f"{row['name']:<16} not found  {row['description']} "
                       f"(give --data-dir or set DISENTANGLE_DATA)")
            continue
        data = load_dataset(row["name"]).data
        click.echo(f"{row['name']:<16} {data.num_users:>7} users {data.num_items:>7} items "
                   f"{data.num_interactions:>9} interactions  {row['description']}  "
                   f"[{row['path']}]")


if __name__ == "__main__":
    main()
