"""The meter app side of `meterctl sim`: the headless run and the live display of the virtual board."""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meterctl import display as screen
from meterctl import keyfiles
from meterctl import scenario as scenarios
from meterctl.cli import CliError
from meterctl.powerfail import PowerFailLine
from meterctl.simlock import SimLock
from meterctl.vboard import ROOT, find_micropython

RUNNER = ROOT / "host_tools" / "vboard" / "run_meter.py"
HEADLESS_HEAP = "24M"
SIM_IMAGE_SIZE = 2 * 1024 * 1024


def micropath():
    dirs = [ROOT / "firmware", ROOT / "host_tools", ROOT / "boards" / "sim"]
    return ":".join([".frozen"] + [str(d) for d in dirs])


def headless_command(image, scenario_text, seconds, progress_s=60, checkpoint_s=None, workdir="."):
    """(argv, env) that run the firmware headless on the unix port (also used by the tests). Paths are
    made absolute here: the firmware runs in `workdir`, not in the caller's directory."""
    image = Path(image).resolve()
    env = dict(os.environ, MICROPYPATH=micropath(), UMETER_BOARD_DIR=str(Path(workdir).resolve()),
               UMETER_FLASH_IMAGE=str(image), UMETER_KEYS_DIR=str(keys_dir_of(image)),
               UMETER_SIM_SCENARIO_JSON=scenario_text, UMETER_SIM_SPEED="0")
    if checkpoint_s is not None:
        env["UMETER_CHECKPOINT_S"] = str(checkpoint_s)
    cmd = [find_micropython(), "-X", "heapsize=" + HEADLESS_HEAP, str(RUNNER), str(seconds), str(progress_s)]
    return cmd, env


def keys_dir_of(image):
    return Path(image).with_name(Path(image).name + ".keys")


def stream_headless(image, scenario_text, seconds, workdir, progress_s=60, on_progress=None):
    """Run the firmware headless and return its result object; on_progress(obj) sees each progress line.
    A firmware that stops without a result raises CliError with its last error line. Files the firmware
    creates (image, keys) are its owner's only (umask 077), as `meterctl keys new` makes key files.
    Ctrl-C is a clean stop: the firmware runs in its own session (the terminal's SIGINT never tears it
    mid-write), meterctl asks it through its power-fail line to book the open window and checkpoint,
    then ends it and re-raises KeyboardInterrupt."""
    cmd, env = headless_command(image, scenario_text, seconds, progress_s=progress_s, workdir=workdir)
    line = PowerFailLine()
    env.update(line.env())
    with tempfile.TemporaryFile("w+") as err:  # a file, so a chatty stderr can never block the run
        proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=err, text=True,
                                umask=0o077, start_new_session=True, pass_fds=line.child_fds())
        line.started()
        try:
            result = _read_results(proc, on_progress)
        except KeyboardInterrupt:
            stopped = line.clean_stop()
            proc.kill()
            proc.wait()
            line.close()
            keyfiles.tighten_key_dir(keys_dir_of(image))
            print("sim: interrupted; %s" % ("checkpointed at seq %d" % line.last_ack[1] if stopped
                                            else "the firmware did not checkpoint"), file=sys.stderr)
            raise
        line.close()
        proc.wait()
        if proc.returncode != 0 or result is None:
            err.seek(0)
            detail = (err.read().strip().splitlines() or ["no output (exit status %s)" % proc.returncode])[-1]
            raise CliError("the firmware stopped: %s" % detail)
    keyfiles.tighten_key_dir(keys_dir_of(image))
    return result


def _read_results(proc, on_progress):
    result = None
    for text in proc.stdout:
        try:
            obj = json.loads(text)
        except ValueError:
            continue
        if obj.get("event") == "progress":
            if on_progress is not None:
                on_progress(obj)
        elif "event" not in obj:
            result = obj
    return result


def check_keys(image, keys_dir, new_key, flag):
    """An existing image sealed under keys that are gone would be continued under a freshly minted
    development key, and every old record would fail to verify: refuse unless the user says so."""
    if Path(image).exists() and not Path(keys_dir).is_dir() and not new_key:
        raise CliError("image %s exists but its key directory %s is missing; its records are sealed under "
                       "those keys (pass %s to continue under a new development key)"
                       % (image, keys_dir, flag))
    try:
        keyfiles.tighten_key_dir(keys_dir)
    except OSError as e:
        raise CliError("cannot set the modes of key directory %s: %s" % (keys_dir, e.strerror or e)) from None


def _check_writable(path, what):
    """Refuse early a file that cannot be created or written (its directory is created if missing)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError("cannot write %s %s: %s" % (what, path, e.strerror or e)) from None
    if path.is_dir():
        raise CliError("cannot write %s %s: it is a directory" % (what, path))
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK | (0 if path.exists() else os.X_OK)):
        raise CliError("cannot write %s %s: permission denied" % (what, path))


def run_headless(args):
    """`meterctl sim run`: N simulated seconds of the real firmware as fast as the host allows."""
    scenario_path, scenario = scenarios.load(args.scenario)
    out_path = Path(args.out).resolve() if getattr(args, "out", None) else None
    if out_path is not None:
        _check_writable(out_path, "result file")

    def progress(obj):
        print("sim: %d/%g simulated s, %.3f Wh imported, mem_free %d"
              % (obj["t_s"], args.seconds, obj["registers_wh"]["1.8.0"], obj["mem_free"]), file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="umeter-sim-") as tmp:
        image = Path(args.image).resolve() if args.image else Path(tmp) / "flash.img"
        if image.exists() and image.stat().st_size != SIM_IMAGE_SIZE:
            raise CliError("image %s is %d bytes; the sim board's W25Q16JV image is %d"
                           % (image, image.stat().st_size, SIM_IMAGE_SIZE))
        _check_writable(image, "image")
        with SimLock(image, "image"):
            check_keys(image, keys_dir_of(image), getattr(args, "new_key", False), "--new-key")
            result = stream_headless(image, scenario, args.seconds, tmp, on_progress=progress)
            if not image.is_file() or image.stat().st_size != SIM_IMAGE_SIZE:
                raise CliError("the firmware wrote no %d-byte image at %s" % (SIM_IMAGE_SIZE, image))
            if args.image:
                write_mark_file(image)
    if out_path is not None:
        try:
            out_path.write_text(json.dumps(result) + "\n")
        except OSError as e:
            raise CliError("cannot write result file %s: %s" % (out_path, e.strerror or e)) from None
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print("%-22s %s" % (key, value))
    return 0


def write_mark_file(image):
    """IMAGE.mark: the keystore's high-water mark as a mark file, for `export --key K --mark IMAGE.mark`
    (meterctl.markfile). No mark yet (no checkpoint): any older mark file is removed, never left stale."""
    from meterctl import markfile

    path = markfile.mark_path_of(image)
    mark = markfile.from_keys_dir(keys_dir_of(image)) if keys_dir_of(image).is_dir() else None
    if mark is None or mark.problem:
        path.unlink(missing_ok=True)
        return
    markfile.write(path, mark)


def read_status(board_dir):
    try:
        return json.loads((Path(board_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return None


def display(board, stop=None, out=None, interval=1.0, patience=15.0):
    """`make sim`: redraw the live display every second from the board's status.json until stopped.
    A board that stopped booting ends it with the reason (CliError); a firmware that says nothing for
    `patience` seconds gets a hint, not an endless wait."""
    out = out or sys.stdout
    header = "umeter virtual board: mpremote connect %s    (Ctrl-C stops)" % board.pty_path
    (Path(board.board_dir) / "status.json").unlink(missing_ok=True)  # never show a previous run's figures
    t0 = time.monotonic()
    while stop is None or not stop.is_set():
        if board.error is not None:
            raise CliError(board.error)
        status = read_status(board.board_dir)
        if status is not None:
            display_lines = screen.render(status, header)
        else:
            display_lines = [header, "  waiting for the firmware to report..."]
            if time.monotonic() - t0 > patience:
                last = board.last_output_line()
                display_lines.append("  no status after %d s (%d boot(s)); its output: %s"
                                     % (patience, board.boots, last or "none; see mpremote connect %s"
                                        % board.pty_path))
        screen.show(display_lines, out)
        time.sleep(interval)
