"""``gpmask <verb>``: a thin command line over the Python API.

Each verb lives in ``gpmask/commands/<verb>.py`` with two functions,
``configure(parser)`` and ``run(args) -> int``. Verb modules import their heavy
dependencies (torch, onnx) inside ``run`` so that ``gpmask run`` on an edge device
never imports torch. A :class:`~gpmask.errors.GpmaskError` becomes one
``gpmask: error: ...`` line and exit code 2 (so does a verb that needs ONNX Runtime where
none is installed: it is an extra the user picks); Ctrl-C exits with 130; a reader that
stops early (``gpmask inspect demo --json | head -1``) ends the command quietly, as
for any Unix tool.

SIGTERM (``docker stop``, systemd, a job scheduler) and SIGHUP (a closed terminal) end
a command exactly as Ctrl-C does: they are raised in the command as
:class:`Terminated`, a ``KeyboardInterrupt``, so every ``finally`` and context manager
on the way out runs: temporary files and folders beside outputs and in the system's
temporary folder are removed, an output stopped short replaces nothing. Further
signals are ignored while that cleanup runs, so a second Ctrl-C or ``kill`` cannot
cut it short (``kill -9`` still can). The exit code is 128 + the signal's number.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import NoReturn

from gpmask import __version__
from gpmask.errors import GpmaskError

#: verb -> module under gpmask.commands. Order is the order of ``gpmask --help``.
VERBS = {
    "train": "train",
    "import": "import_",
    "inspect": "inspect",
    "eval": "eval",
    "export": "export",
    "calibrate": "calibrate",
    "build": "build",
    "train-router": "train_router",
    "run": "run",
    "demo": "demo",
    "bench": "bench",
    "check": "check",
    "serve": "serve",
    "export-triton": "export_triton",
}


class _Parser(argparse.ArgumentParser):
    """argparse with gpmask's error line: a bad option ends like any other bad input, in
    one ``gpmask: error: ...`` line (pointing at ``--help``) and exit code 2, instead of
    argparse's usage block. Subcommand parsers are made of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"gpmask: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gpmask",
        description="Train, export, calibrate, build and run GGPM multi-weather restoration.",
    )
    parser.add_argument("--version", action="version", version=f"gpmask {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, module_name in VERBS.items():
        module = importlib.import_module(f"gpmask.commands.{module_name}")
        doc = (module.__doc__ or "").strip().splitlines()
        sub = subparsers.add_parser(
            verb,
            help=doc[0] if doc else None,
            description="\n".join(doc) or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(sub)
        sub.set_defaults(_module=module)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP received: the command unwinds as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: Signals that stop a command: Ctrl-C, and those a service manager or terminal sends.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


@contextlib.contextmanager
def stop_signals_unwind() -> Iterator[None]:
    """Inside the block, the first of :data:`STOP_SIGNALS` raises ``KeyboardInterrupt``
    (SIGINT) or :class:`Terminated`; those after it are ignored. Handlers can only be
    set from the main thread; elsewhere the block runs with the process's handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        for each in STOP_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpmask`` console script; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a bad option (one line printed)
        return int(exit_.code or 0)
    try:
        with stop_signals_unwind():
            code = int(args._module.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except GpmaskError as exc:
        print(f"gpmask: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except Terminated as stopped:
        name = signal.Signals(stopped.signum).name
        print(f"gpmask: terminated ({name})", file=sys.stderr)
        return 128 + stopped.signum
    except ModuleNotFoundError as exc:
        if exc.name != "onnxruntime":
            raise
        # ONNX Runtime is an extra the user picks (CPU or GPU build; pyproject.toml)
        from gpmask.host import onnxruntime_problem

        print(f"gpmask: error: {one_line(onnxruntime_problem() or str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpmask: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader has gone (| head): Python's documented recipe — point stdout at
        # devnull so the interpreter's final flush does not fail again, exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the pipe


def one_line(message: str) -> str:
    """``message`` with its line breaks (from a library's multi-line text) made spaces."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def export_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpmask-export`` console script (same as ``gpmask export``)."""
    return main(["export", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
