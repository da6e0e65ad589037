"""The meter app side of `meterctl sim`: the headless run and the live display of the virtual board."""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meterctl import display as screen
from meterctl.cli import CliError
from meterctl.vboard import ROOT, find_micropython

RUNNER = ROOT / "host_tools" / "vboard" / "run_meter.py"
HEADLESS_HEAP = "24M"
SIM_IMAGE_SIZE = 2 * 1024 * 1024


def micropath():
    dirs = [ROOT / "firmware", ROOT / "host_tools", ROOT / "boards" / "sim"]
    return ":".join([".frozen"] + [str(d) for d in dirs])


def headless_command(image, scenario_text, seconds, progress_s=60, checkpoint_s=None, workdir="."):
    """(argv, env) that run the firmware headless on the unix port (also used by the tests)."""
    env = dict(os.environ, MICROPYPATH=micropath(), UMETER_BOARD_DIR=str(workdir),
               UMETER_FLASH_IMAGE=str(image), UMETER_KEYS_DIR=str(image) + ".keys",
               UMETER_SIM_SCENARIO_JSON=scenario_text, UMETER_SIM_SPEED="0")
    if checkpoint_s is not None:
        env["UMETER_CHECKPOINT_S"] = str(checkpoint_s)
    cmd = [find_micropython(), "-X", "heapsize=" + HEADLESS_HEAP, str(RUNNER), str(seconds), str(progress_s)]
    return cmd, env


def stream_headless(image, scenario_text, seconds, workdir, progress_s=60, on_progress=None):
    """Run the firmware headless and return its result object; on_progress(obj) sees each progress line.
    A firmware that stops without a result raises CliError with its last error line."""
    cmd, env = headless_command(image, scenario_text, seconds, progress_s=progress_s, workdir=workdir)
    with tempfile.TemporaryFile("w+") as err:  # a file, so a chatty stderr can never block the run
        proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=err, text=True)
        result = None
        for line in proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("event") == "progress":
                if on_progress is not None:
                    on_progress(obj)
            elif "event" not in obj:
                result = obj
        proc.wait()
        if proc.returncode != 0 or result is None:
            err.seek(0)
            detail = (err.read().strip().splitlines() or ["no output"])[-1]
            raise CliError("the firmware stopped: %s" % detail)
    return result


def run_headless(args):
    """`meterctl sim run`: N simulated seconds of the real firmware as fast as the host allows."""
    scenario = Path(args.scenario).read_text()

    def progress(obj):
        print("sim: %d/%g simulated s, %.3f Wh imported"
              % (obj["t_s"], args.seconds, obj["registers_wh"]["1.8.0"]), file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="umeter-sim-") as tmp:
        image = Path(args.image) if args.image else Path(tmp) / "flash.img"
        if image.exists() and image.stat().st_size != SIM_IMAGE_SIZE:
            raise CliError("image %s is %d bytes; the sim board's W25Q16JV image is %d"
                           % (image, image.stat().st_size, SIM_IMAGE_SIZE))
        image.parent.mkdir(parents=True, exist_ok=True)
        result = stream_headless(image, scenario, args.seconds, tmp, on_progress=progress)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print("%-22s %s" % (key, value))
    return 0


def read_status(board_dir):
    try:
        return json.loads((Path(board_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return None


def display(board, stop=None, out=None, interval=1.0):
    """`make sim`: redraw the live display every second from the board's status.json until stopped."""
    out = out or sys.stdout
    header = "umeter virtual board: mpremote connect %s    (Ctrl-C stops)" % board.pty_path
    (Path(board.board_dir) / "status.json").unlink(missing_ok=True)  # never show a previous run's figures
    while stop is None or not stop.is_set():
        status = read_status(board.board_dir)
        if status is not None:
            display_lines = screen.render(status, header)
        else:
            display_lines = [header, "  waiting for the firmware to report..."]
        screen.show(display_lines, out)
        time.sleep(interval)
