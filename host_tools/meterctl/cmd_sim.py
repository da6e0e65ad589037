"""``meterctl sim``: run the firmware on a virtual board (MicroPython unix port) behind a pty.

    meterctl sim [--board-dir DIR] [--scenario FILE] [--power-cut [--hold-up-ms MS]] [--no-display]
    meterctl sim run --scenario FILE --seconds N [--image FILE] [--new-key] [--json] [--out FILE]

The interactive form starts the board (meterctl/vboard.py), prints the pty path for mpremote and shows
the live display (meterctl.simapp.display) or, with --no-display, only event lines, until Ctrl-C.
The headless ``run`` is meterctl.simapp.run_headless. The scenario reaches the firmware as the
environment variables UMETER_SIM_SCENARIO (host path) and UMETER_SIM_SCENARIO_JSON (its text).
Every path given resolves against the user's working directory; the scenario is validated before
anything is written; a board directory or image in use by another sim is refused (meterctl.simlock).
"""
import importlib
import signal
import sys
import time
from pathlib import Path

from meterctl import scenario as scenarios
from meterctl.cli import CliError
from meterctl.simlock import SimLock
from meterctl.vboard import DEFAULT_HOLD_UP_MS, ROOT, VirtualBoard, VirtualBoardError

DEFAULT_BOARD_DIR = ROOT / "sim_state"


def register(subparsers):
    p = subparsers.add_parser("sim", help="run the firmware on a virtual board (pty for mpremote)",
                              description="Run the firmware on the MicroPython unix port behind a pty that "
                                          "speaks the REPL like a board's serial port.")
    p.add_argument("--board-dir", type=Path, default=DEFAULT_BOARD_DIR,
                   help="the board's filesystem and flash image (default: sim_state/ in the repository)")
    p.add_argument("--scenario", type=Path, help="grid scenario JSON")
    p.add_argument("--power-cut", action="store_true",
                   help="kill the firmware at random moments and restart it")
    p.add_argument("--cut-interval", type=float, nargs=2, metavar=("MIN", "MAX"), default=(2.0, 10.0),
                   help="seconds between power cuts, drawn uniformly (default: 2 10)")
    p.add_argument("--seed", type=int, help="random seed for the power-cut times")
    p.add_argument("--hold-up-ms", type=float, default=DEFAULT_HOLD_UP_MS,
                   help="simulated hold-up time between the power-fail warning and each cut "
                        "(default: %(default)g ms; 0: no warning)")
    p.add_argument("--new-key", action="store_true",
                   help="start a board whose flash image exists but whose keys/ is missing under a new "
                        "development key (its old records will not verify)")
    p.add_argument("--no-display", action="store_true", help="print event lines instead of the live display")
    p.add_argument("--main", type=Path, help="run this host script instead of the board's main.py")
    p.add_argument("--heapsize", default="24M",
                   help="MicroPython heap (default: 24M; the flash image lives in it)")
    p.set_defaults(func=run_interactive)

    sub = p.add_subparsers(dest="sim_command", metavar="{run}")
    r = sub.add_parser("run", help="headless: run N simulated seconds as fast as possible, print JSON")
    r.add_argument("--scenario", type=Path, required=True, help="grid scenario JSON")
    r.add_argument("--seconds", type=float, required=True, help="simulated seconds to run")
    r.add_argument("--image", type=Path, help="flash image to continue from (created if missing)")
    r.add_argument("--new-key", action="store_true",
                   help="continue an image whose key directory (IMAGE.keys) is missing under a new "
                        "development key (its old records will not verify)")
    r.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    r.add_argument("--out", type=Path, help="also write the result as JSON to this file")
    r.set_defaults(func=run_headless)


def load_scenario(path):
    """The scenario's text, validated (meterctl.scenario)."""
    return scenarios.load(path)[1]


def simapp():
    """meterctl.simapp (written with the meter app), imported only when needed."""
    try:
        return importlib.import_module("meterctl.simapp")
    except ModuleNotFoundError as e:
        if e.name not in ("meterctl.simapp", None):
            raise
        raise CliError("the simulated meter app (meterctl.simapp) is not available yet") from None


def run_headless(args):
    load_scenario(args.scenario)
    if not args.seconds > 0 or args.seconds != args.seconds or args.seconds == float("inf"):
        raise CliError("--seconds must be a positive number")
    return simapp().run_headless(args)


def board_env(scenario):
    if scenario is None:
        return {}
    path, text = scenarios.load(scenario)
    return {"UMETER_SIM_SCENARIO": str(path), "UMETER_SIM_SCENARIO_JSON": text}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_interactive(args, out=None):
    out = out or sys.stdout
    env = board_env(args.scenario)
    if args.main is not None and not args.main.is_file():
        raise CliError("no such main script: %s" % args.main)
    lo, hi = args.cut_interval
    if args.power_cut and not 0 < lo <= hi:
        raise CliError("--cut-interval needs 0 < MIN <= MAX")
    if args.hold_up_ms < 0 or args.hold_up_ms != args.hold_up_ms:
        raise CliError("--hold-up-ms must be 0 or more")
    board_dir = args.board_dir.resolve()
    if board_dir.exists() and not board_dir.is_dir():
        raise CliError("board directory %s is not a directory" % board_dir)
    if args.scenario is None and (board_dir / "scenario.json").exists():
        scenarios.load(board_dir / "scenario.json")  # what the sim board reads without --scenario
    try:
        board_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError("cannot create board directory %s: %s" % (board_dir, e.strerror or e)) from None
    app = simapp()
    display = None if args.no_display else app.display
    with SimLock(board_dir, "board directory"), SimLock(board_dir / "flash.img", "image"):
        app.check_keys(board_dir / "flash.img", board_dir / "keys", args.new_key, "--new-key")
        return _run_board(args, board_dir, env, display, out, lo, hi)


def _run_board(args, board_dir, env, display, out, lo, hi):

    def log(line):
        if display is None:
            print("sim: " + line, file=out, flush=True)

    try:
        board = VirtualBoard(board_dir, main=args.main, heapsize=args.heapsize, env=env, log=log)
        board.start()
    except (VirtualBoardError, OSError) as e:
        raise CliError(str(e)) from None
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        print("virtual board on %s (board dir %s)" % (board.pty_path, board.board_dir), file=out)
        print("  mpremote connect %s resume exec \"...\"" % board.pty_path, file=out, flush=True)
        if args.power_cut:
            board.start_power_cuts(lo, hi, seed=args.seed, hold_up_ms=args.hold_up_ms)
        if display is not None:
            display(board)
        else:
            while board.error is None:
                time.sleep(0.2)
            raise CliError(board.error)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    print("virtual board stopped", file=out, flush=True)
    return 0
