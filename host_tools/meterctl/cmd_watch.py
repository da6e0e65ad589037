"""``meterctl watch --port P [--interval S] [--count N]``: the live meter display of ``make sim`` from any
port. A development meter: one raw-REPL session (no soft reset) reads ``umeter.app.status()`` every
interval. A production meter (a role key given: --role-key FILE or --key-dir DIR): one console session as
reader reads `status` every interval. On a terminal the frame is redrawn in place, otherwise each frame is
one plain line. Ctrl-C stops cleanly (exit 0). A lost connection is shown in the frame and retried at the
next interval."""
import sys
import time

from meterctl import display
from meterctl.cli import CliError
from meterctl.cmd_status import add_port_args, fetch_status
from meterctl.remote import Remote, RemoteError, check_port


def register(subparsers):
    p = subparsers.add_parser("watch", help="live meter display from a board's port (Ctrl-C stops)",
                              description="Show the live meter display (as `make sim` does) for the meter "
                                          "on any port, refreshed every interval: over the raw REPL "
                                          "(development) or the console protocol (production, with a "
                                          "role key).")
    add_port_args(p)
    from meterctl.production import add_role_args
    add_role_args(p)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between frames (default: 1)")
    p.add_argument("--count", type=int, help="stop after this many frames (for scripts)")
    p.set_defaults(func=run)


class ReplSource:
    """Status readings from a development meter over one raw-REPL session."""

    def __init__(self, port, timeout):
        self.dev = Remote(port, timeout=timeout)

    def open(self):
        self.dev.open()   # a dead port fails here, with one line

    def read(self):
        if not self.dev.connected:
            self.dev.open()   # reconnect: the board may have been reset or power-cycled
        status = fetch_status(self.dev)
        status.setdefault("mode", "development")  # the REPL answered: it is open
        return status

    def close(self):
        self.dev.close()


class ConsoleSource:
    """Status readings from a production meter over one console session (logged in again when lost)."""

    def __init__(self, console):
        self.console = console
        self._open = False

    def open(self):
        self.console.open()
        self._open = True

    def read(self):
        if not self._open:
            self.open()
        return self.console.json("status")

    def close(self):
        if self._open:
            self._open = False
            try:
                self.console.close()
            except (CliError, OSError):
                pass  # the line is gone: nothing to log out of


def _source(args):
    from meterctl import production as prod
    console = prod.console_for(args)
    if console is not None:
        return ConsoleSource(console)
    return ReplSource(args.port, args.timeout)


def run(args, out=None):
    from meterctl import production as prod
    out = out or sys.stdout
    check_port(args.port)
    if not args.interval > 0:
        raise CliError("--interval must be positive")
    if args.count is not None and args.count < 1:
        raise CliError("--count must be at least 1")
    src = _source(args)
    try:
        src.open()
    except RemoteError:
        if prod.which_mode(args.port) is not None:
            raise CliError(prod.production_hint(args.port)) from None
        raise
    frames = 0
    try:
        while True:
            header = "umeter on %s   %s   (Ctrl-C stops)" % (args.port, time.strftime("%H:%M:%S"))
            try:
                lines = display.render(src.read(), header)
            except CliError as e:
                if frames == 0:
                    raise
                lines = [header, "  no reading: %s (retrying every %gs)" % (e, args.interval)]
                src.close()
            display.show(lines, out)
            frames += 1
            if args.count is not None and frames >= args.count:
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        src.close()
    return 0
