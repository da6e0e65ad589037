"""``meterctl status --port P [--json]``: one reading of the running meter, from any port (a real board's
serial port or the virtual board's pty). It runs ``umeter.app.status()`` on the device through the raw REPL
without a soft reset, so the meter keeps running, and prints the display frame or the JSON."""
import json
import re
import sys

from meterctl import display
from meterctl.cli import CliError
from meterctl.remote import DEFAULT_TIMEOUT, Remote, RemoteError, check_port

STATUS_CODE = "import json as _umj, umeter.app as _uma\nprint(_umj.dumps(_uma.status()))\ndel _umj, _uma\n"
# MicroPython's json writes nan/inf bare; CPython reads NaN/Infinity. Strings are matched to be skipped.
_BARE = re.compile(r'"(?:\\.|[^"\\])*"|-?\binf\b|\bnan\b')
_FIXED = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def register(subparsers):
    p = subparsers.add_parser("status", help="show the running meter's status (one frame, or --json)",
                              description="Read umeter.app.status() from the device over the raw REPL "
                                          "(no soft reset: the meter keeps running).")
    add_port_args(p)
    from meterctl.production import add_role_args
    add_role_args(p)
    p.add_argument("--json", action="store_true", help="print the status as one JSON object")
    p.set_defaults(func=run)


def add_port_args(p):
    p.add_argument("--port", help="serial port, e.g. /dev/ttyUSB0, or the virtual board's /dev/pts/N")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds to wait for the device to answer (default: %g)" % DEFAULT_TIMEOUT)


def parse_status(text):
    text = text.strip()
    line = text.splitlines()[-1] if text else ""
    try:
        return json.loads(_BARE.sub(lambda m: _FIXED.get(m.group(0), m.group(0)), line))
    except ValueError:
        raise CliError("the device answered something that is not a status: %r" % line[:80]) from None


def fetch_status(dev):
    """The meter's status dict; a CliError when there is no firmware or the meter is not running."""
    try:
        out = dev.exec(STATUS_CODE)
    except RemoteError as e:
        if "ImportError" in str(e) and "umeter" in str(e):
            raise CliError("no umeter firmware on %s: run `meterctl deploy --board NAME --port %s` first"
                           % (dev.port, dev.port)) from None
        raise
    status = parse_status(out)
    if not isinstance(status, dict):
        raise CliError("the device answered something that is not a status: %r" % out.strip()[:80])
    if "error" in status and len(status) == 1:
        raise CliError("the meter is not running on %s: %s (its boot messages: `mpremote connect %s "
                       "repl`, then Ctrl-D)" % (dev.port, status["error"], dev.port))
    return status


def read_status(args):
    """The status from a development meter (raw REPL) or, with a role key, a production one (console)."""
    from meterctl import production as prod
    check_port(args.port)
    console = prod.console_for(args, getattr(args, "role", "reader"))
    if console is not None:  # a role key and a port that speaks the protocol: a production meter
        with console as c:
            return c.json("status")
    try:
        with Remote(args.port, timeout=args.timeout) as dev:
            status = fetch_status(dev)
    except RemoteError:
        if prod.which_mode(args.port) is not None:
            raise CliError(prod.production_hint(args.port)) from None
        raise
    status.setdefault("mode", "development")  # the REPL answered: it is open
    return status


def run(args, out=None):
    out = out or sys.stdout
    status = read_status(args)
    if args.json:
        print(json.dumps(status, sort_keys=True), file=out)
    else:
        print("\n".join(display.render(status, "umeter on %s" % args.port)), file=out)
    return 0
