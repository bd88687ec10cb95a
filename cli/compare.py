"""``disentangle compare``: several models, several seeds, one split, one table.

Register in :mod:`disentangle_cli.main` with ``main.add_command(compare)``. The library
(:mod:`disentangle.compare`) is imported inside the command, so importing this module stays
cheap.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import DEVICE, SIGNAL_EXIT, friendly_errors

__all__ = ["compare"]


@click.command("compare")
@click.option("--models", required=True, metavar="A,B,...",
              help="Models to compare, comma-separated; the first is the reference of the "
                   "paired test and gives the protocol, cut-offs and selection metric.")
@click.option("--dataset", type=str, default=None,
              help="Dataset name (see `disentangle datasets`) or csv:PATH; default "
                   "ml-latest-small, embedded.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder with the dataset's raw files (else $DISENTANGLE_DATA/<dataset>).")
@click.option("--split-dir", type=click.Path(file_okay=False), default=None,
              help="Ready split in Liang et al.'s format (held-out users).")
@click.option("--protocol", type=click.Choice(["heldout", "ratio", "given", "temporal",
                                                "temporal-global"]), default=None,
              help="Split protocol (default: the first model's); a model that cannot run it "
                   "is refused.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs per model, with train.seed = 0, 1, ..., N-1.")
@click.option("--set", "overrides", multiple=True, metavar="[MODEL:]SECTION.KEY=VALUE",
              help="Override a config value for every model (--set train.epochs=20), or for "
                   "one (--set macridvae:model.tau=0.2); repeatable. data.* is shared.")
@click.option("--out", type=click.Path(file_okay=False), default="runs/compare",
              show_default=True,
              help="Folder of the run folders (<model>-seed<seed>) and of compare.json, "
                   "compare.md and compare.png; finished runs there are reused, stopped ones "
                   "resumed.")
@DEVICE
@click.option("--quiet", is_flag=True, help="No progress bars or run lines.")
@friendly_errors
def compare(models, dataset, data_dir, split_dir, protocol, seeds, overrides, out, device,
            quiet):
    """Train every model with every seed on one shared split, then print one table: test
    metrics (mean ± sd over seeds), median seconds per epoch, peak memory, and a paired
    Wilcoxon test over test users against the first model.

    Ctrl-C keeps the finished runs and the last epoch of the one training: run the same
    command again to continue.
    """
    from disentangle.compare import compare as run_compare
    from disentangle.compare import format_table

    names = [m.strip() for m in models.split(",") if m.strip()]
    options = {key: value for key, value in (
        ("data.dataset", dataset), ("data.data_dir", data_dir),
        ("data.split_dir", split_dir)) if value is not None}

    def announce(model: str, seed: int, path: Path, action: str) -> None:
        if not quiet:
            what = {"fit": "training", "resume": "resuming", "reuse": "reusing"}[action]
            click.echo(f"{model} seed {seed}: {what} {path}", err=True)

    try:
        summary = run_compare(names, range(seeds), out, overrides=list(overrides),
                              options=options, protocol=protocol, device=device,
                              progress=not quiet, on_run=announce)
    except KeyboardInterrupt as e:
        sig = getattr(e, "signal_name", "SIGINT")
        what = "interrupted" if sig == "SIGINT" else f"terminated ({sig})"
        click.echo(f"{what}: finished runs and the last saved epoch are kept in {out}; run "
                   f"the same command again to continue", err=True)
        sys.exit(SIGNAL_EXIT.get(sig, 130))
    click.echo(format_table(summary))
    click.echo(f"\nwritten: {Path(out) / 'compare.json'}, compare.md, compare.png")
