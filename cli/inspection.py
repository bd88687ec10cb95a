"""``disentangle inspect`` and the explanations of ``disentangle recommend --explain``.

Register in :mod:`disentangle_cli.main` with ``main.add_command(inspect_command)`` (wrapping
its callback in ``friendly_errors`` there), and call :func:`print_explanations` from
``recommend --explain``. Torch and the library are imported inside the functions, so
importing this module stays cheap.

(The module is not called ``inspect.py``: run as ``python cli/main.py``, the folder is on
``sys.path`` and such a file would shadow the standard library's ``inspect``, which click
imports.)
"""
from __future__ import annotations

from pathlib import Path

import click

__all__ = ["format_explanations", "inspect_command", "print_explanations", "run_inspect"]


@click.command("inspect")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--user", "user", default=None,
              help="Raw user id to explain in the report (default: a typical user).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for the plots, factors.json and report.html "
                   "(default: RUN_DIR/inspect).")
@click.option("--tsne-items", type=click.IntRange(min=5), default=2000, show_default=True,
              help="Items drawn (seeded) for the t-SNE picture; fewer is faster.")
def inspect_command(run_dir, user, out, tsne_items):
    """Factor metrics, pictures and a self-contained report.html for RUN_DIR."""
    return run_inspect(run_dir, user, out, tsne_items)


def run_inspect(run_dir: str | Path, user: str | None = None, out: str | Path | None = None,
                tsne_items: int = 2000) -> dict:
    """Body of ``disentangle inspect``: print the factor summary and the report's path."""
    from disentangle.runs import load_run
    from disentangle.viz.report import inspect_run, summary_table

    run = load_run(run_dir)
    click.echo("computing factor metrics and pictures (the t-SNE takes a few seconds)...",
               err=True)
    try:
        result = inspect_run(run, out, user, max_items=tsne_items)
    except KeyError:
        raise click.BadParameter(f"unknown user id {user!r} in {run_dir} "
                                 f"({run.split.train.num_users} users)",
                                 param_hint="'--user'") from None
    click.echo(f"{run.config.model_name} on {run.config.data.dataset}, "
               f"{run.split.protocol} protocol, best epoch {run.best_epoch}; "
               f"users measured: {result['users_measured']}")
    click.echo(summary_table(result["metrics"]))
    click.echo(f"example user: {result['user']} "
               f"({len(result['explanations'])} recommendations explained in the report)")
    click.echo(f"report: {result['report']}")
    return result


def format_explanations(rows: list[dict], user: str, history_size: int,
                        title_width: int = 60) -> str:
    """The explanations of :func:`~disentangle.explain.explain_recommendations` as
    terminal text: per item its factor, the factor's categories and the user's own items."""
    from disentangle.viz.plots import shorten

    lines = [(f"top {len(rows)} for user {user} ({history_size} known items), each with the "
              f"factor it comes from:")]
    for r in rows:
        f = r["factor"]
        cats = f"  [{', '.join(r['item_categories'])}]" if r["item_categories"] else ""
        described = ", ".join(f"{c['category']} ×{c['lift']:.2f}"
                              for c in r["factor_categories"])
        lines.append(f"{r['rank']:>3}. {shorten(r['title'], title_width)}{cats}")
        lines.append(f"     factor {f} ({r['share']:.0%} of the score)"
                     + (f": {described}" if described else ""))
        own = "; ".join(shorten(d["title"], 40) for d in r["drivers"])
        lines.append(f"     the user's items in factor {f}: {own or 'none'}")
    if any(r["factor_categories"] for r in rows):
        lines.append("×lift: how much more common the category is in the factor than among "
                     "all items (×1.00 = just as common)")
    return "\n".join(lines)


def print_explanations(run, user: str, k: int = 10) -> None:
    """Print the top-``k`` recommendations of ``user`` (raw id), each with its factor, that
    factor's top categories and the user's items that drive it. ``KeyError`` if the run does
    not know the user."""
    from disentangle.explain import explain_recommendations, known_items, user_index

    rows = explain_recommendations(run, user, k)
    n_known = known_items(run.split, user_index(run.split.train, user)).nnz
    click.echo(format_explanations(rows, user, n_known))
