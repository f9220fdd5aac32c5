"""The ``rtdenoise`` console script: one subcommand per module.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; modules are
imported lazily so that ``rtdenoise file`` never imports torch or sounddevice.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import UserError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "file": ("rtdenoise.file_mode", "denoise audio files (wav/flac/ogg, any rate and channels)"),
    "live": ("rtdenoise.live", "denoise a live input device into an output device"),
    "export": ("rtdenoise.export", "export a checkpoint to TorchScript and ONNX"),
    "eval": ("rtdenoise.evaluate", "score denoised files: STOI, PESQ-nb, SI-SDR, NSR"),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the ``selected`` subcommand's module is imported (for its options)."""
    parser = argparse.ArgumentParser(
        prog="rtdenoise",
        description="Real-time streaming speech denoiser (8 kHz VQ-VAE SE-U-Net).",
        epilog="Run 'rtdenoise COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"rtdenoise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if name != selected:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        module = _import_subcommand(name, module_name)
        p = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _import_subcommand(name: str, module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "a dependency"
        hint = " (pip install 'rtdenoise[train]')" if missing.split(".")[0] == "torch" else ""
        msg = f"'rtdenoise {name}' needs {missing}, which is not installed{hint}"
        raise UserError(msg) from None


def _selected_command(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in SUBCOMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(_selected_command(argv))
    except UserError as exc:
        print(f"rtdenoise: error: {exc}", file=sys.stderr)
        return exc.exit_code
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    level = logging.WARNING - 10 * getattr(args, "verbose", 0)
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"rtdenoise: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rtdenoise: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    sys.exit(main())
