"""``meterctl watch --port P [--interval S] [--count N]``: the live meter display of ``make sim`` from any
port. One raw-REPL session (no soft reset) reads ``umeter.app.status()`` every interval; on a terminal
the frame is redrawn in place, otherwise each frame is one plain line. Ctrl-C stops cleanly (exit 0).
A lost connection is shown in the frame and retried at the next interval."""
import sys
import time

from meterctl import display
from meterctl.cli import CliError
from meterctl.cmd_status import add_port_args, fetch_status
from meterctl.remote import Remote, check_port


def register(subparsers):
    p = subparsers.add_parser("watch", help="live meter display from a board's port (Ctrl-C stops)",
                              description="Show the live meter display (as `make sim` does) for the meter "
                                          "on any port, refreshed every interval.")
    add_port_args(p)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between frames (default: 1)")
    p.add_argument("--count", type=int, help="stop after this many frames (for scripts)")
    p.set_defaults(func=run)


def run(args, out=None):
    out = out or sys.stdout
    check_port(args.port)
    if not args.interval > 0:
        raise CliError("--interval must be positive")
    if args.count is not None and args.count < 1:
        raise CliError("--count must be at least 1")
    dev = Remote(args.port, timeout=args.timeout).open()   # a dead port fails here, with one line
    frames = 0
    try:
        while True:
            header = "umeter on %s   %s   (Ctrl-C stops)" % (args.port, time.strftime("%H:%M:%S"))
            try:
                if not dev.connected:
                    dev.open()          # reconnect: the board may have been reset or power-cycled
                lines = display.render(fetch_status(dev), header)
            except CliError as e:
                if frames == 0:
                    raise
                lines = [header, "  no reading: %s (retrying every %gs)" % (e, args.interval)]
                dev.close()
            display.show(lines, out)
            frames += 1
            if args.count is not None and frames >= args.count:
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        dev.close()
    return 0
