"""The ``plkd`` command line: one sub-command per module in :mod:`plkd.commands`.

Errors caused by the user (:class:`plkd.errors.PLKDError`) are printed as a single line
``plkd: error: ...`` on stderr with exit code 2; Ctrl-C exits with 130 and no traceback.
``plkd`` alone prints the help; ``-v``/``-vv`` work before or after the sub-command.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn

from plkd import __version__
from plkd.errors import PLKDError

#: Sub-commands in the order ``plkd --help`` lists them; each is the module ``plkd.commands.<name>``.
COMMANDS: list[str] = ["demo", "predict", "evaluate", "synth", "lowres", "train", "cv", "export", "tune", "benchmark"]


class _Parser(argparse.ArgumentParser):
    """argparse's parser (sub-commands' too: ``add_subparsers`` makes them of this class) whose refusal of an option
    is one line, ``plkd: error: predict: argument --threads: invalid int value: 'abc' (options: plkd predict
    --help)``, exit status 2, as every other refusal; argparse printed its usage block first, up to 20 lines."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("plkd").strip()
        said = " ".join(message.split())
        self.exit(2, f"plkd: error: {command + ': ' if command else ''}{said} (options: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, each sub-command contributed by its own module."""
    parser = _Parser(
        prog="plkd",
        description=(
            "Cerebral microbleed detection and segmentation in low-resolution MRI "
            "(two-stage screening + E2U-Net, progressive-learning knowledge distillation)."
        ),
    )
    parser.add_argument(
        "-V", "--version", action=_VersionAction, help="show plkd's, torch's and the installed models' versions"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"plkd.commands.{name}").register(sub)
    for sp in sub.choices.values():
        # The same option after the sub-command (``plkd predict -v ...``), counted separately.
        if "-v" not in sp._option_string_actions:
            sp.add_argument("-v", "--verbose", dest="sub_verbose", action="count", default=0, help=argparse.SUPPRESS)
    return parser


def sub_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of the sub-command ``command`` of ``parser`` (:func:`build_parser`)."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def version_text() -> str:
    """``plkd X, torch Y``, then each installed model (``model (T2*): NAME (path)``, ``model (SWI): ...``): what a
    bug report needs."""
    lines = [f"plkd {__version__} (Python {sys.version.split()[0]})"]
    try:
        import torch

        lines.append(f"torch {torch.__version__}")
    except ImportError:  # pragma: no cover - a declared dependency
        lines.append("torch: not installed")
    from plkd.bundle import find_default_bundle

    # One line per contrast: ``plkd predict --modality auto`` picks either installed model per scan.
    paths = {label: find_default_bundle(modality) for modality, label in (("T2S", "T2*"), ("SWI", "SWI"))}
    if not any(paths.values()):
        lines.append("model: none installed (give --model BUNDLE)")
    for label, path in paths.items():
        if path is None:
            continue
        try:
            manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8")) if path.is_dir() else {}
        except (OSError, ValueError):
            manifest = {}
        name = manifest.get("name", path.name)
        made = f", made with plkd {manifest['plkd_version']}" if "plkd_version" in manifest else ""
        lines.append(f"model ({label}): {name} ({path}{made})")
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    """``--version``: like argparse's, but computed only when asked (it imports torch)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kwargs: object) -> None:
        print(version_text())
        parser.exit()


#: Options whose value is a point ``X,Y,Z`` that may start with a minus sign (``--at-ras -20,10,5``).
_POINT_OPTIONS = ("--at-ras",)
_POINT = re.compile(r"-[0-9.][0-9.eE+-]*(,[-+]?[0-9.][0-9.eE+-]*){2}")


def _join_negative_points(argv: list[str]) -> list[str]:
    """``--at-ras -20,10,5`` → ``--at-ras=-20,10,5``: argparse would take the value for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _POINT_OPTIONS and i + 1 < len(argv) and _POINT.fullmatch(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``plkd`` console script."""
    try:
        # Importing the commands (torch) and reading the options take seconds: Ctrl+C then is a run stopped too.
        parser = build_parser()
        args, extra = parser.parse_known_args(_join_negative_points(sys.argv[1:] if argv is None else list(argv)))
        if extra:  # said by the sub-command's parser, which names itself and its --help
            command = sub_parser(parser, args.command) if args.command else parser
            command.error(f"unrecognized arguments: {' '.join(extra)}")
    except KeyboardInterrupt:
        _say_on_stderr("plkd: interrupted")
        return 130
    if args.command is None:
        parser.print_help()
        return 0
    args.verbose += getattr(args, "sub_verbose", 0)
    # Our own notes (e.g. "combined 3 echoes") at INFO; other libraries only from -vv on.
    logging.basicConfig(
        level=logging.WARNING if args.verbose < 2 else logging.DEBUG, format="%(levelname)s: %(message)s"
    )
    logging.getLogger("plkd").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    code = exit_code_of(lambda: args.func(args))
    if argv is None and threading.current_thread() is threading.main_thread():
        # The run is over (its last line printed, its outputs whole); Python takes seconds more to shut torch and the
        # rest down, and Ctrl+C then printed a traceback over a finished run. The exit status stays the run's.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def exit_code_of(func: Callable[[], int | None]) -> int:
    """Run ``func`` as a command: its return value (None = 0) is the exit code; a :class:`PLKDError` is printed as
    one line ``plkd: error: …`` and gives 2, Ctrl-C ``plkd: interrupted`` and 130. The scripts of ``scripts/`` run
    their ``main`` through it so that their refusals read like the command line's.

    When the environment names the process that started this one (:data:`plkd.parent.ENV_VAR`, set by the Slicer
    module), the run stops as after Ctrl-C once that process is gone (exit :data:`plkd.parent.EXIT_CODE`); the
    same when its standard output was closed (exit 141, as a pipe's reader that went away)."""
    from plkd.parent import EXIT_CODE, parent_gone, watch_parent_from_env

    try:
        watch_parent_from_env()
        return int(func() or 0)
    except PLKDError as exc:
        print(f"plkd: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A full disk while writing (a checkpoint, a bundle, an output): one line, as for other errors a user fixes;
        # the atomic writers have removed their temporaries, so nothing is left half-written.
        from plkd.atomic import disk_full_message

        if (text := disk_full_message(exc)) is None:
            raise
        _say_on_stderr(f"plkd: error: {text}")
        return 2
    except KeyboardInterrupt:
        gone = parent_gone.is_set()
        _say_on_stderr("plkd: stopped: the process that started it is gone" if gone else "plkd: interrupted")
        return EXIT_CODE if gone else 130
    except BrokenPipeError:
        # The reader of stdout (the Slicer module, a pipe) went away: nothing more can be reported.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        _say_on_stderr("plkd: stopped: its output was closed")
        return 141


def _say_on_stderr(text: str) -> None:
    """Print ``text`` on stderr, which may be closed too (the parent that read it is gone)."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
