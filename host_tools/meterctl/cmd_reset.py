"""``meterctl reset --port P``: a clean reboot of the meter (as `mpremote reset`, but the meter books its open
window and checkpoints first, so no energy is lost).

- Development (raw REPL open): code exec'd on the device stops the meter cleanly (`Meter.stop()`: the open
  window, then a checkpoint) and calls ``machine.reset()``. On the real boards the meter is stepped by a
  soft timer through ``micropython.schedule``; the stop and the reset run as one scheduled callback, so no
  step can run between the checkpoint and the reset. On the virtual board (the unix port) the metering
  thread does the clean stop itself at exit, which ``machine.reset()`` is (boards/sim/board.py).
- Production (a role key given, `--role-key FILE` or `--key-dir DIR`, operator by default): the console's
  operator command `reboot`; the meter answers, stops cleanly and reboots. A firmware without the command
  says so (exit 2), and nothing happens.

Then, unless --no-wait, the meter is read again once it is back, and the registers before and after are
printed: after a clean reboot they never went down (exit 3 if they did)."""
import sys
import time

from meterctl.cli import CliError
from meterctl.cmd_status import add_port_args, fetch_status
from meterctl.remote import Remote, RemoteError, check_port

EXIT_WENT_DOWN = 3
IMPORT = "1.8.0"

# MicroPython, exec'd over the raw REPL: defines the reset and says whether a meter runs. TRIGGER then
# starts it; its answer is never awaited (the board resets under it).
RESET_CODE = r"""
import sys as _ums
def _umr_go(_arg=None):
    import machine
    a = _ums.modules.get('umeter.app')
    m = a.meter() if a is not None else None
    if m is not None and _ums.platform != 'linux':
        try:
            m.stop()
        except Exception:
            pass
    machine.reset()
_uma = _ums.modules.get('umeter.app')
print('meter', 'running' if _uma is not None and _uma.meter() is not None else 'none')
del _uma
"""
TRIGGER = (b"import micropython\nif _ums.platform == 'linux':\n    _umr_go()\n"
           b"else:\n    micropython.schedule(_umr_go, None)\n")
BACK_TIMEOUT = 30.0


def register(subparsers):
    p = subparsers.add_parser("reset", help="reboot the meter cleanly (it checkpoints first)",
                              description="A clean reboot: the meter books its open window and "
                                          "checkpoints, then restarts. Development meters over the raw "
                                          "REPL; production meters with the operator's console command "
                                          "`reboot` (a role key: --role-key FILE or --key-dir DIR).")
    add_port_args(p)
    from meterctl.production import add_role_args
    add_role_args(p, default_role="operator")
    p.add_argument("--no-wait", action="store_true",
                   help="do not wait for the meter to come back (no before/after registers check)")
    p.set_defaults(func=run)


def _regs(status):
    regs = status.get("registers_wh") or {}
    return regs.get(IMPORT)


def _development(args, out):
    with Remote(args.port, timeout=args.timeout) as dev:
        try:
            before = fetch_status(dev)
        except CliError:
            before = None  # no meter running: a plain reset
        said = dev.exec(RESET_CODE).split()
        # Submitted, not awaited: the board resets while it would answer (mpremote's exec_raw_no_follow).
        dev.exec_no_follow(TRIGGER, args.timeout)
    running = said[-1:] == ["running"]
    print("%s: %s; machine.reset() sent" % (args.port, "the meter stops cleanly (open window booked, "
                                            "checkpoint taken)" if running else "no meter running"), file=out)
    return before


def _production(args, console, out):
    from meterctl import production as prod
    with console as c:
        before = c.json("status")
        prod.reboot(c)
    print("%s: the meter answered reboot: it stops cleanly (open window booked, checkpoint taken) and "
          "restarts" % args.port, file=out)
    return before


def _read_back(args, console, meter=True):
    """The status once the meter answers again (it is booting); CliError after BACK_TIMEOUT s. Without a
    meter before the reset (meter=False), a raw REPL answering again is enough: {} then."""
    from meterctl import production as prod
    deadline = time.monotonic() + max(BACK_TIMEOUT, args.timeout)
    time.sleep(0.5)
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            if console is not None:
                prod.wait_for_console(args.port, timeout=max(1.0, deadline - time.monotonic()))
                with console as c:
                    return c.json("status")
            with Remote(args.port, timeout=min(args.timeout, 2.0)) as dev:
                return fetch_status(dev) if meter else {}
        except CliError as e:
            last = str(e)
        time.sleep(0.5)
    raise CliError("the meter on %s did not come back within %gs after the reset: %s"
                   % (args.port, max(BACK_TIMEOUT, args.timeout), last))


def run(args, out=None):
    from meterctl import production as prod
    out = out or sys.stdout
    check_port(args.port)
    console = prod.console_for(args)
    if console is not None:
        before = _production(args, console, out)
    else:
        try:
            before = _development(args, out)
        except RemoteError:
            if prod.which_mode(args.port) is not None:
                raise CliError(prod.production_hint(args.port) + " (the operator's, for `reboot`)") from None
            raise
    if args.no_wait:
        return 0
    after = _read_back(args, console, meter=before is not None)
    b, a = (_regs(before) if before else None), _regs(after)
    mode = after.get("mode") or "development"
    if b is None or a is None:
        print("%s: back up (%s%s)" % (args.port, mode, "" if after else ", no meter running"), file=out)
        return 0
    print("%s: back up (%s): import register %s %.3f Wh before, %.3f Wh after"
          % (args.port, mode, IMPORT, b, a), file=out)
    if a < b:
        print("meterctl reset: the import register went down across the reset (%.3f -> %.3f Wh)" % (b, a),
              file=sys.stderr)
        return EXIT_WENT_DOWN
    return 0
