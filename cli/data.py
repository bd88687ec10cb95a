"""``disentangle datasets`` and ``disentangle download``: what data there is, and getting it."""
from __future__ import annotations

import click

from .common import friendly_errors


@click.command()
@friendly_errors
def datasets():
    """List the datasets this toolkit knows, where they were found, and their counts; for a
    missing one, the command that downloads it."""
    from disentangle.data import available, load_dataset
    from disentangle.data.download import CATALOGUE, default_dir

    for row in available():
        name = row["name"]
        if row["path"] is None:
            entry = CATALOGUE.get(name)
            how = ("get it with: disentangle download " + name
                   + (" --no-verify (no pinned checksum)" if entry.unverified else "")
                   + f"  (into {default_dir(name)})") if entry else \
                "give --data-dir or set DISENTANGLE_DATA"
            click.echo(f"{name:<16} not found  {row['description']}; {how}")
            continue
        data = load_dataset(name).data
        click.echo(f"{name:<16} {data.num_users:>7} users {data.num_items:>7} items "
                   f"{data.num_interactions:>9} interactions  {row['description']}  "
                   f"[{row['path']}]")


@click.command()
@click.argument("name")
@click.option("--dir", "folder", type=click.Path(file_okay=False), default=None,
              help="Folder to put the files in (default: $DISENTANGLE_DATA/NAME, else "
                   "~/.local/share/disentangle/NAME, where --dataset NAME finds them).")
@click.option("--no-verify", is_flag=True,
              help="Skip the checksum checks (needed for files without a pinned checksum).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, help="Seconds to wait for the server on each read.")
@friendly_errors
def download(name, folder, no_verify, timeout):
    """Download dataset NAME (ml-100k, ml-1m, ml-20m, ml-latest-small, gowalla, yelp2018,
    amazon-book), check each file's pinned checksum and move it into place. An interrupted
    download resumes where it stopped when run again."""
    from disentangle.data.download import download as fetch_dataset

    path = fetch_dataset(name, folder, verify=not no_verify, timeout=timeout)
    click.echo(f"{name}: {path}" + ("" if no_verify else " (checksums verified)"))
