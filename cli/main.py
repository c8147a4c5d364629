"""The ``geoseg`` command: a thin Click layer over the geoseg library.

Commands are imported only when invoked, so ``geoseg --help`` (and ``rio --help``, which
loads this group as a plugin) never imports torch. Errors geoseg raises on purpose
(:class:`geoseg.GeosegError`) become one line on stderr and exit status 1; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import faulthandler
import importlib
import itertools
import logging
import os
import signal
import sys
import warnings
from typing import Any

import click

from geoseg import __version__
from geoseg.errors import GeosegError, GeosegWarning
from geoseg.progress import ReportHandler, begin_reports, emit_event, report_warning

# name -> "module:attribute" of the click command (one per line, sorted).
_COMMANDS: dict[str, str] = {
    "bundle": "geoseg.cli.bundle:bundle",
    "models": "geoseg.cli.models:models",
    "predict": "geoseg.cli.predict:predict",
    "qgis": "geoseg.cli.qgis:qgis",
    "score": "geoseg.cli.score:score",
    "tile": "geoseg.cli.tile:tile",
    "train": "geoseg.cli.train:train",
    "vectorize": "geoseg.cli.vectorize:vectorize",
}


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: Any = None, line: str | None = None) -> None:
    if issubclass(category, GeosegWarning):
        report_warning(str(message))  # once per run; a JSON event under --progress json
    else:
        logging.getLogger("py.warnings").debug("%s:%s: %s", filename, lineno, message)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so every ``finally`` removes partial outputs."""


#: Seconds a stopped run may spend removing its partial outputs before it is ended anyway.
STOP_GRACE_S = 20


def _arm_stop_watchdog() -> None:
    """End the process ``STOP_GRACE_S`` after a stop signal, whatever its threads are doing.

    The clean-up after SIGTERM / Ctrl-C runs in the main thread; if it ever waited on a
    worker stuck in an engine call, the run would be deaf to the signal. faulthandler's
    watchdog is a C thread that needs no GIL: it calls ``_exit(1)`` when the time is up.
    """
    global _devnull  # noqa: PLW0603 - kept open for the watchdog's whole life
    if _devnull is None:
        _devnull = open(os.devnull, "w")  # noqa: SIM115
    faulthandler.dump_traceback_later(STOP_GRACE_S, exit=True, file=_devnull)


_devnull: Any = None


def _on_sigterm(signum: int, frame: Any) -> None:
    _arm_stop_watchdog()
    raise _Terminated


def _on_sigint(signum: int, frame: Any) -> None:
    _arm_stop_watchdog()
    raise KeyboardInterrupt


def _install_stop_handlers() -> list[tuple[int, Any]]:
    """Install SIGTERM / Ctrl-C handling for one command; return what to restore."""
    if not threading_is_main():  # signal handlers can only be set from the main thread
        return []
    before: list[tuple[int, Any]] = [(s, signal.getsignal(s))
                                     for s in (signal.SIGTERM, signal.SIGINT)]
    signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    return before


def _restore_stop_handlers(before: list[tuple[int, Any]]) -> None:
    """Give a host process (tests, a notebook) its handlers back; disarm the watchdog."""
    for signum, handler in before:
        if handler is not None:
            signal.signal(signum, handler)
    if before:
        faulthandler.cancel_dump_traceback_later()


class GeosegGroup(click.Group):
    """A group that loads commands lazily and maps ``GeosegError`` to one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(_COMMANDS) | set(super().list_commands(ctx)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS:
            module, attr = _COMMANDS[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, cmd_name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["geoseg.args"] = list(args)  # for _json_requested, even on usage errors
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        json_mode = _json_requested(ctx.meta.get("geoseg.args", []))
        before = _install_stop_handlers()
        try:
            return super().invoke(ctx)
        except GeosegError as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if json_mode:
                emit_event("error", message=message)
                sys.exit(1)
            raise click.ClickException(message) from None
        except click.ClickException as exc:  # usage errors, bad option values
            message = exc.format_message().strip().splitlines()[0]
            if json_mode:
                emit_event("error", message=message)
                sys.exit(exc.exit_code)
            if isinstance(exc, click.UsageError):  # one line, not click's usage block
                where = exc.ctx.command_path if exc.ctx is not None else "geoseg"
                raise _OneLineUsageError(f"{message} (see {where} --help)") from None
            raise
        except KeyboardInterrupt as exc:
            # Partial outputs are already removed (``finally`` blocks ran). Exit now rather
            # than wait for worker threads to finish the batch they are in.
            # A command may say what it kept (train: how to resume) in the exception.
            terminated = isinstance(exc, _Terminated)
            said = str(exc).splitlines()[0] if str(exc) else ""
            if json_mode:
                fields = {"signal": "SIGTERM" if terminated else "SIGINT"}
                emit_event("terminated", None, **(fields | ({"message": said} if said else {})))
            else:
                click.echo(said or ("Terminated." if terminated else "Interrupted."),
                           err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(143 if terminated else 130)
        finally:
            _restore_stop_handlers(before)


class _OneLineUsageError(click.ClickException):
    """A usage error shown as one ``Error:`` line; exit status 2 like click's."""

    exit_code = 2


def _json_requested(args: list[str]) -> bool:
    """Whether the command line asks for ``--progress json`` (errors are then JSON too)."""
    return "--progress=json" in args or any(
        a == "--progress" and b == "json" for a, b in itertools.pairwise(args))


def threading_is_main() -> bool:
    """Signal handlers can only be installed from the main thread."""
    import threading

    return threading.current_thread() is threading.main_thread()


@click.group(name="geoseg", cls=GeosegGroup)
@click.version_option(__version__, "--version", prog_name="geoseg")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Semantic segmentation of satellite and aerial scenes.

    \b
    geoseg predict scene.tif -o landcover.tif          # class map (COG)
    geoseg models                                      # what models exist
    """
    ctx = click.get_current_context()
    begin_reports("json" if _json_requested(ctx.meta.get("geoseg.args", [])) else "text")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, ReportHandler)]:
        root.removeHandler(handler)
    root.addHandler(ReportHandler())  # warnings once each, JSON events under --progress json
    root.setLevel(max(logging.WARNING - 10 * verbose, logging.DEBUG))
    warnings.showwarning = _show_warning
    warnings.simplefilter("default", GeosegWarning)


def main() -> None:
    """Entry point for ``python -m geoseg.cli``."""
    cli()


if __name__ == "__main__":
    main()
