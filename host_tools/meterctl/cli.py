"""meterctl command line. Each sub-command lives in a module ``meterctl/cmd_<name>.py`` that defines
``register(subparsers)``; the parser it adds sets ``func(args) -> exit status``.

Errors that the user can act on are raised as ``CliError`` and printed as one line, exit status 2."""
import argparse
import importlib
import pkgutil
import sys

import meterctl


class CliError(Exception):
    """A user-facing error: printed as one line, never with a traceback."""


def build_parser():
    parser = argparse.ArgumentParser(prog="meterctl", description="Host tools for umeter smart meters.")
    parser.add_argument("--version", action="version", version="meterctl " + meterctl.__version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(meterctl.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            importlib.import_module("meterctl." + info.name).register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except CliError as e:
        print("meterctl %s: error: %s" % (args.command, e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("meterctl %s: interrupted" % args.command, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
