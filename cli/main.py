"""The ``disentangle`` command line.

Thin by design: it parses options, calls :mod:`disentangle`, and prints. Torch and PyG are
imported inside the commands so ``disentangle --help`` answers at once. Every expected
failure is one line on stderr with a non-zero exit code (2 for bad usage); ``--debug``
shows the traceback instead.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path

import click

from .common import (
    DEVICE,
    UnknownUser,
    click_errors_on_one_line,
    debug_mode,
    fail,
    friendly_errors,
)
from .compare import compare
from .data import datasets, download
from .inspection import inspect_command
from .tune import tune_command


def _version_message() -> str:
    """``--version``: this package and the libraries that decide its numbers, read from the
    installed distributions (nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return (f"%(prog)s %(version)s (torch {of('torch')}, torch-geometric "
            f"{of('torch-geometric')}, torch-scatter {of('torch-scatter')}, "
            f"Python {sys.version.split()[0]})")


class OneLineErrors(click.Group):
    """A group whose parse errors print as one line, and whose commands' unexpected
    exceptions do too when a command is not wrapped in :func:`friendly_errors`."""

    def make_context(self, *args, **kwargs):
        with click_errors_on_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with click_errors_on_one_line():
            try:
                return super().invoke(ctx)
            except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
                raise
            except (Exception, KeyboardInterrupt) as e:
                if debug_mode():
                    raise
                fail(e)


class _EchoWarnings(logging.Handler):
    """The library's warnings (merged duplicate rows, users without targets) as
    ``warning: ...`` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"{record.levelname.lower()}: {record.getMessage()}", err=True)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="disentangle", message=_version_message())
def main(debug: bool) -> None:
    """Disentangled representations for recommendation: MacridVAE and DisenGCN."""
    lib = logging.getLogger("disentangle")
    if os.environ.get("RANK", "0") != "0":  # under torchrun, warnings print once (rank 0)
        lib.setLevel(logging.ERROR)
    if not any(isinstance(h, _EchoWarnings) for h in lib.handlers):
        lib.addHandler(_EchoWarnings(logging.WARNING))
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


@main.command()
@click.option("--model", "model", type=str, default=None,
              help="Model to train: macridvae, disengcn, or a baseline (ease, itemknn, bpr, multvae, "
                   "multdae, lightgcn); or model.name in --config.")
@click.option("--dataset", type=str, default=None,
              help="Dataset name (see `disentangle datasets`), or your own data: csv:PATH (rows of "
                   "user, item[, rating[, timestamp]]), recbole:DIR/NAME (RecBole .inter/.item) "
                   "or lightgcn:DIR (train.txt/test.txt); default ml-latest-small, embedded.")
@click.option("--delimiter", type=str, default=None,
              help="Column separator of a csv:PATH file (data.delimiter): a character, or tab, "
                   "space, comma, semicolon, pipe; default: detected.")
@click.option("--columns", type=str, default=None, metavar="ROLE=NAME,...",
              help="Columns of a csv:PATH or recbole: file by role (data.columns), e.g. "
                   "user=customer_ref,item=item_code,rating=stars,timestamp=ts; default: "
                   "recognised by their usual names.")
@click.option("--items", "items", type=click.Path(dir_okay=False), default=None,
              help="Item catalogue (data.items): rows of item id, title and categories "
                   "separated by |, for titles and the factor metrics on your own data.")
@click.option("--rating-threshold", type=float, default=None,
              help="Keep interactions rated at least this (data.rating_threshold; only for data "
                   "with ratings).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder with the dataset's raw files (else $DISENTANGLE_DATA/<dataset>).")
@click.option("--split-dir", type=click.Path(file_okay=False), default=None,
              help="Ready split in Liang et al.'s format (train.csv, test_tr.csv, ...).")
@click.option("--protocol", type=click.Choice(["heldout", "ratio", "given", "temporal",
                                               "temporal-global"]), default=None,
              help="Split protocol: held-out users, per-user ratio, the dataset's own split, "
                   "each user's latest interactions (temporal), or one time cut for all "
                   "(temporal-global; both need a timestamp column).")
@click.option("--config", "configs", multiple=True, type=click.Path(dir_okay=False),
              help="YAML config file(s), applied in order on top of the model's defaults.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config value, e.g. --set model.tau=0.2 (repeatable).")
@click.option("--epochs", type=click.IntRange(min=0), default=None,
              help="Training epochs (train.epochs).")
@click.option("--seed", type=int, default=None, help="Training seed (train.seed).")
@DEVICE
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory to create, absent or empty (default: "
                   "runs/<model>-<dataset>-<time>).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True),
              default=None, help="Continue the stopped run in this directory (with --epochs: "
                                 "to that many epochs, no fewer than it has done).")
@click.option("--quiet", is_flag=True,
              help="No progress output (bars on a terminal, else a line per epoch); the final "
                   "table stays.")
@click.option("--no-report", is_flag=True,
              help="Skip the factor metrics, plots and report.html written after training.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the results as JSON (results.json's content) instead of the table.")
@click.option("--nproc", type=click.IntRange(min=1), default=1,
              help="Train data-parallel on N processes of this machine (runs itself again "
                   "under torchrun; gloo on CPU, NCCL on GPUs).")
@friendly_errors
def fit(model, dataset, delimiter, columns, items, rating_threshold, data_dir, split_dir,
        protocol, configs, overrides, epochs, seed, device, out, resume_dir, quiet, no_report,
        as_json, nproc):
    """Train a model and report held-out test metrics next to popularity.

    The run directory is locked while the run trains (a second fit into it fails at once);
    Ctrl-C or SIGTERM keeps the last finished epoch and prints the command that continues it.

    \b
    Examples:
      disentangle fit --model macridvae --epochs 20
      disentangle fit --model disengcn --dataset ml-100k --data-dir ~/data/ml-100k
      disentangle fit --config my.yaml --set model.num_factors=5 --out runs/k5
      disentangle fit --resume runs/k5 --epochs 200
      disentangle fit --model multvae --nproc 2      # data-parallel, 2 processes
    """
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        _relaunch_under_torchrun(nproc)
    from disentangle.config import resolve
    from disentangle.runs import default_path, read_config, resolve_device
    from disentangle.train.run import fit as run_fit
    from disentangle.train.run import resume as run_resume

    resolve_device(device)  # a bad --device before anything else
    # typed option values, never parsed as YAML text: --split-dir null is the folder 'null'
    options = {key: value for key, value in (
        ("data.dataset", dataset), ("data.delimiter", delimiter), ("data.columns", columns),
        ("data.items", items),
        ("data.rating_threshold", rating_threshold), ("data.data_dir", data_dir),
        ("data.split_dir", split_dir), ("data.protocol", protocol), ("train.epochs", epochs),
        ("train.seed", seed)) if value is not None}

    def announce(path: Path) -> None:
        click.echo(f"run directory: {path}", err=True)

    if resume_dir is not None:
        given = {"--model": model, "--dataset": dataset, "--delimiter": delimiter,
                 "--columns": columns, "--items": items,
                 "--rating-threshold": rating_threshold, "--data-dir": data_dir,
                 "--split-dir": split_dir, "--protocol": protocol, "--config": configs,
                 "--set": overrides, "--seed": seed, "--out": out}
        fixed = [name for name, value in given.items() if value not in (None, ())]
        if fixed:
            raise click.UsageError(f"--resume continues the run with its own config; drop "
                                   f"{', '.join(fixed)} (only --epochs, --device and --quiet "
                                   f"apply)")
        run_dir = Path(resume_dir)
        results = run_resume(run_dir, epochs, device, progress=not quiet, on_start=announce)
        cfg = read_config(run_dir)
    else:
        cfg = resolve(model, list(configs), list(overrides), options)
        run_dir = Path(out) if out else default_path(cfg)
        results = run_fit(cfg, run_dir, device, progress=not quiet, on_start=announce)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 alone prints and writes the report
    click.echo(json.dumps(results, indent=1) if as_json
               else results_table(results, cfg.model_name, cfg.train.ks))
    if not no_report:
        from disentangle.models.base import FactorRecommender
        from disentangle.runs import load_run
        from disentangle.viz.report import inspect_run

        run = load_run(run_dir)
        if isinstance(run.model, FactorRecommender):
            click.echo(f"report: {inspect_run(run)['report']}", err=as_json)
        else:
            click.echo(f"report: none ({cfg.model_name} is a ranking-only baseline and has no "
                       f"factors)", err=as_json)


def _relaunch_under_torchrun(nproc: int) -> None:
    """Replace this process by ``torchrun --standalone --nproc_per_node=N`` running the same
    command without ``--nproc`` (each of its processes then trains one data-parallel rank)."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    os.execvp(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc_per_node={nproc}", "-m", "disentangle_cli.main", *args])


def results_table(results: dict, model: str, ks) -> str:
    """The final test metrics of the model beside popularity, with the recall definition."""
    test, pop = results["test"], results["popularity"]["test"]
    liang = results["protocol"] == "heldout"
    recall = "recall_liang" if liang else "recall"
    definition = "hits / min(k, |test|) (Liang et al.)" if liang else "hits / |test|"
    rows = [f"ndcg@{k}" for k in ks] + [f"{recall}@{k}" for k in ks]
    chosen = ("by validation" if "valid" in results
              else "(the last; no validation set)")
    lines = [(f"test metrics ({results['protocol']} protocol, {test['users']} users; best epoch "
              f"{results['best_epoch']} {chosen}); Recall@k = {definition}")]
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
@DEVICE
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@friendly_errors
def evaluate(run_dir, device, as_json):
    """Re-evaluate the best model of RUN_DIR on its validation (if any) and test users.

    \b
    Example:
      disentangle evaluate runs/macridvae-ml-latest-small-20261205-0812 --json
    """
    from disentangle.runs import load_run
    from disentangle.train.run import final_results

    run = load_run(run_dir, device)
    results = final_results(run.model, run.split, run.config.train, run.best_epoch)
    click.echo(json.dumps(results, indent=1) if as_json
               else results_table(results, run.config.model_name, run.config.train.ks))


@main.command("config")
@click.option("--model", "model", type=str, default=None,
              help="Model whose defaults start the config (or model.name in --config).")
@click.option("--config", "configs", multiple=True, type=click.Path(dir_okay=False),
              help="YAML config file(s), applied in order on top of the model's defaults.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config value (repeatable).")
@friendly_errors
def config_command(model, configs, overrides):
    """Print the resolved config (defaults, files, then --set) as YAML that --config takes.

    \b
    Examples:
      disentangle config --model disengcn
      disentangle config --config configs/macridvae-paper.yaml --set train.epochs=50
    """
    import yaml

    from disentangle.config import resolve

    cfg = resolve(model, list(configs), list(overrides))
    click.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False), nl=False)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--user", "user", required=True, help="Raw user id, as in the dataset.")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Number of recommendations.")
@click.option("--explain", is_flag=True,
              help="Per item: its factor, the factor's top categories, and the user's own "
                   "items that drive that factor.")
@friendly_errors
def recommend(run_dir, user, k, explain):
    """Top-k items for a user, with titles and the factor each comes from."""
    from disentangle.explain import recommend as recommend_items
    from disentangle.runs import load_run

    run = load_run(run_dir)  # on the CPU: one user's scores
    try:
        if explain:
            from .inspection import print_explanations

            return print_explanations(run, user, k)
        recs = recommend_items(run, user, k)
    except KeyError:
        raise UnknownUser(f"unknown user id {user!r} in {run_dir} "
                          f"({run.split.train.num_users} users)") from None
    click.echo(f"top {k} for user {user} ({recs['history_size']} known items):")
    if recs["items"] and "factor" not in recs["items"][0]:
        click.echo(f"{'rank':>4}  title")
        for r, row in enumerate(recs["items"], 1):
            click.echo(f"{r:>4}  {row['title']}")
        return
    click.echo(f"{'rank':>4}  {'factor':>6} {'share':>5}  title")
    for r, row in enumerate(recs["items"], 1):
        click.echo(f"{r:>4}  {row['factor']:>6} {row['share']:>5.2f}  {row['title']}")


inspect_command.callback = friendly_errors(inspect_command.callback)
for command in (inspect_command, compare, tune_command, datasets, download):
    main.add_command(command)

if __name__ == "__main__":
    main()
