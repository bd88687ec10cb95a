"""What every command of the ``disentangle`` command line shares: one-line errors with their
exit codes (2 for bad usage), and the ``--device`` option."""
from __future__ import annotations

import contextlib
import functools
import shlex
import sys

import click

#: Exceptions (by class name, anywhere in their MRO, so the library is not imported here)
#: that mean bad input: exit code 2. Anything else that escapes a command exits with 1.
#: ``Diverged`` (a NaN or infinite loss, weight or score) comes from the config's values.
USAGE_ERRORS = ("ConfigError", "ValueError", "FileNotFoundError", "IsADirectoryError",
                "NotADirectoryError", "PermissionError", "CheckpointError", "UnknownUser",
                "Diverged")
#: Exit codes of a run stopped by a signal, as a shell reports them (128 + the signal).
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


class UnknownUser(click.ClickException):
    exit_code = 2


def _one_line(e: BaseException) -> str:
    if isinstance(e, click.ClickException):
        msg = e.format_message()
    elif isinstance(e, OSError) and e.filename:
        msg = f"{e.filename}: {e.strerror}"
    else:
        msg = str(e) or type(e).__name__
    return " ".join(part.strip() for part in msg.splitlines() if part.strip())


def _exit_code(e: BaseException) -> int:
    return 2 if {c.__name__ for c in type(e).__mro__} & set(USAGE_ERRORS) else 1


def debug_mode() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("debug"))


def friendly_errors(fn):
    """Turn the library's expected exceptions into one line and an exit code."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (Exception, KeyboardInterrupt) as e:
            if debug_mode() and not isinstance(e, click.ClickException):
                raise
            fail(e)
    return wrapper


def fail(e: BaseException) -> None:
    """Print ``e`` as one line (Ctrl-C or SIGTERM: where the run is saved) and exit."""
    if isinstance(e, KeyboardInterrupt):
        sig = getattr(e, "signal_name", "SIGINT")
        what = "interrupted" if sig == "SIGINT" else f"terminated ({sig})"
        if getattr(e, "saved_epoch", None) is not None:
            click.echo(f"{what}: {e}; continue with: disentangle fit --resume "
                       f"{shlex.quote(str(e.run_dir))}", err=True)
        else:
            click.echo(what, err=True)
        sys.exit(SIGNAL_EXIT.get(sig, 130))
    click.echo(f"error: {_one_line(e)}", err=True)
    sys.exit(e.exit_code if isinstance(e, click.ClickException) else _exit_code(e))


@contextlib.contextmanager
def click_errors_on_one_line():
    """Click's own usage errors (unknown option, bad value, missing argument) as one
    ``error: ...`` line too, with click's exit code 2."""
    try:
        yield
    except click.ClickException as e:
        if isinstance(e, getattr(click.exceptions, "NoArgsIsHelpError", ())):
            raise  # a bare `disentangle` prints the help
        hint = ""
        if isinstance(e, click.UsageError) and e.ctx is not None:
            hint = f" (see '{e.ctx.command_path} --help')"
        click.echo(f"error: {_one_line(e)}{hint}", err=True)
        raise click.exceptions.Exit(e.exit_code) from None


#: One --device option, one default, for the commands that train or evaluate a model
#: (recommend and inspect score on the CPU).
DEVICE = click.option("--device", type=str, default="auto", show_default=True,
                      help="cpu, cuda, cuda:N, mps or auto (CUDA when available).")
