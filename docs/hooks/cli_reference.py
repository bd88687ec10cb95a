"""MkDocs hook: the line ``<!-- cli-reference -->`` of a page becomes the ``--help`` text of
the ``disentangle`` command and of every subcommand, read from the click app at build time,
so the reference cannot drift from the code."""
from __future__ import annotations

import click

MARKER = "<!-- cli-reference -->"
WIDTH = 78  # the code width of a Material page


def _sections(command: click.Command, name: str, parent: click.Context | None) -> list[str]:
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    ctx = click.Context(command, info_name=name.rsplit(" ", 1)[-1], parent=parent, **settings)
    out = [f"## `{name}`\n\n```text\n{command.get_help(ctx)}\n```\n"]
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            out += _sections(command.get_command(ctx, sub), f"{name} {sub}", ctx)
    return out


def reference() -> str:
    """The Markdown of every command's help, the group first."""
    from disentangle_cli.main import main

    return "\n".join(_sections(main, "disentangle", None))


def on_page_markdown(markdown: str, **kwargs) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())
