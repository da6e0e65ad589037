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

RUNNER = ROOT / "host_tools" / "sim" / "run_meter.py"
HEADLESS_HEAP = "24M"


def micropath():
    dirs = [ROOT / "firmware", ROOT / "host_tools", ROOT / "boards" / "sim"]
    return ":".join([".frozen"] + [str(d) for d in dirs])


def run_headless(args):
    """`meterctl sim run`: N simulated seconds of the real firmware as fast as the host allows."""
    scenario = Path(args.scenario).read_text()
    with tempfile.TemporaryDirectory(prefix="umeter-sim-") as tmp:
        image = Path(args.image) if args.image else Path(tmp) / "flash.img"
        if image.exists() and image.stat().st_size != 2 * 1024 * 1024:
            raise CliError("image %s is %d bytes; the sim board's W25Q16JV image is 2097152"
                           % (image, image.stat().st_size))
        image.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MICROPYPATH=micropath(), UMETER_BOARD_DIR=tmp,
                   UMETER_FLASH_IMAGE=str(image), UMETER_KEYS_DIR=str(image) + ".keys",
                   UMETER_SIM_SCENARIO_JSON=scenario, UMETER_SIM_SPEED="0")
        cmd = [find_micropython(), "-X", "heapsize=" + HEADLESS_HEAP, str(RUNNER), str(args.seconds)]
        proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
    for line in proc.stderr.splitlines():
        if line.startswith("sim: "):
            print(line, file=sys.stderr)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CliError("the firmware stopped: %s" % detail)
    result = json.loads(lines[-1])
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
    while stop is None or not stop.is_set():
        status = read_status(board.board_dir)
        if status is not None:
            display_lines = screen.render(status, header)
        else:
            display_lines = [header, "  waiting for the firmware to report..."]
        screen.show(display_lines, out)
        time.sleep(interval)
