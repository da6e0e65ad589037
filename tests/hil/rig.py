"""The HIL rig: one interface to a board under test, real (a serial port, an optional power switch, a
grid source) or virtual (meterctl.vboard.VirtualBoard started by the suite).

Everything the tests do to the board goes through the host tools a user has: the meterctl CLI (run
in-process, as `meterctl ...` would) and meterctl.remote.Remote for the few one-line checks the CLI has
no command for. A production board (--production DIR: its REPL is closed) is reached only through the
console protocol with the role keys in DIR (the same meterctl commands with --key-dir DIR). Only the three
physical acts differ between the two kinds of board:

    reset()         real: machine.reset() over the REPL        virtual: the reset button (restart)
    power_cycle()   real: the --power-cycle shell command      virtual: warning, hold-up, kill, boot
    scenario        real: the --grid file (what the source     virtual: the same dict, given to the sim
                    applies)                                   board as its grid scenario
"""
import contextlib
import io
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

from meterctl.cli import main as meterctl_main
from meterctl.remote import Remote, RemoteError
from sim import grid

ROOT = Path(__file__).resolve().parents[2]
# The virtual board's grid when no --grid is given: a lagging load, so P, Q and S all differ.
DEFAULT_SCENARIO = {"vrms": 230.0, "irms": 8.0, "phase_deg": 25.0, "freq_hz": 50.0, "noise_lsb": 1}
SIM_SPEED = "20"          # the virtual board meters 20 simulated seconds per wall second
SIM_CHECKPOINT_S = "30"   # simulated seconds between checkpoints (1.5 wall seconds at SIM_SPEED)
SIM_HEAP = "24M"          # the sim board's flash image lives in the heap (as `meterctl sim`)


class RigError(AssertionError):
    """The board did not do what the rig waited for (a test failure, with the reason)."""


def meterctl(*args):
    """Run `meterctl ARGS` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = meterctl_main([str(a) for a in args])
        except SystemExit as e:  # argparse usage errors
            code = e.code if isinstance(e.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def meterctl_ok(*args):
    """stdout of a meterctl command that must succeed; RigError with its stderr otherwise."""
    code, out, err = meterctl(*args)
    if code != 0:
        raise RigError("meterctl %s: exit %s: %s" % (" ".join(str(a) for a in args[:3]), code,
                                                      (err or out).strip()[-600:]))
    return out


def load_grid(path):
    """The scenario dict of a --grid file, validated as the sim board does (meterctl.scenario)."""
    from meterctl import scenario

    _, text = scenario.load(path)
    return json.loads(text)


def truth(scenario):
    """The physical values of a scenario (sim.grid.truth(): from the scenario, not from samples)."""
    return grid.Grid(scenario).truth()


def tolerances(scenario, board_nominal=(grid.U_NOMINAL, grid.I_NOMINAL)):
    """Allowed |reading - truth| per quantity: a class 1 meter's 1 % of the value, plus 0.5 % of the
    nominal U / I (or U*I for powers) for small signals, plus the scenario's own noise and DC offset
    on the sim board's ADC scaling (grid.py). Frequency: 0.05 Hz (the engine counts zero crossings)."""
    un, inom = board_nominal
    bits = int(scenario.get("adc_bits", grid.DEFAULTS["adc_bits"]))
    lsb_v = grid.V_PEAK_FS / (1 << (bits - 1))
    lsb_i = grid.I_PEAK_FS / (1 << (bits - 1))
    dc = scenario.get("dc_lsb", 0)
    dc = max(abs(d) for d in dc) if isinstance(dc, (list, tuple)) else abs(dc)
    extra = float(scenario.get("noise_lsb", 0)) + dc + 1.0
    t = truth(scenario)
    tol_v = 0.01 * t["vrms"] + 0.005 * un + extra * lsb_v
    tol_i = 0.01 * t["irms"] + 0.005 * inom + extra * lsb_i
    tol_p = 0.01 * t["s"] + 0.005 * un * inom + t["vrms"] * extra * lsb_i + t["irms"] * extra * lsb_v
    return {"vrms": tol_v, "irms": tol_i, "p": tol_p, "freq": 0.05}


class Rig:
    """A board under test. port: its serial port (real) or pty (virtual); board: the boards/ name."""

    def __init__(self, port, board, virtual, scenario=None, power_cycle_cmd=None, key_args=(),
                 vboard=None, ota_key=None, work_dir=None, cut_warns=False, timeout=10.0, key_dir=None,
                 software_id=None):
        self.port = port
        self.board = board
        self.virtual = virtual
        self.scenario = scenario          # what the grid source applies, or None (unknown)
        self.power_cycle_cmd = power_cycle_cmd
        self.cut_warns = virtual or cut_warns  # the cut raises the board's power-fail input first
        self.key_args = list(key_args)    # `meterctl export` key arguments, [] when the rig has no key
        self.vboard = vboard
        self.ota_key = ota_key            # signing key file the device's update trust store trusts
        self.work_dir = Path(work_dir) if work_dir else None
        self.timeout = timeout
        self.key_dir = Path(key_dir) if key_dir else None  # production: the host key directory (roles)
        self.production = key_dir is not None
        self.role_args = ["--key-dir", self.key_dir] if self.production else []
        self.software_id = software_id    # the signed app the board must run, when the suite installed it

    # ---- capabilities: what a test needs, and why it is missing -------------------------------------
    def lacks(self, need):
        """None when the rig has `need`, else the reason (the test's skip message)."""
        why = {
            "power_cycle": None if self.virtual or self.power_cycle_cmd else
            "needs --power-cycle CMD: a command that cuts and restores the board's supply",
            "grid": None if self.scenario is not None else
            "needs --grid FILE: the scenario the rig's voltage/current source applies",
            "export_key": None if self.key_args else
            "needs --master-key FILE: the device master key `meterctl provision` installed",
            "ota_key": None if self.ota_key else
            "needs --ota-key FILE: the rig's Ed25519 signing key (the device's update trust store is "
            "provisioned once; a throwaway key would lock the rig out of later updates)",
            "development": None if not self.production else
            "needs a development-mode board (REPL open): this run is --production, the board's REPL is "
            "closed (run the suite again without --production on a development board)",
            "production": None if self.production else
            "needs --production DIR: a production meter (meterctl provision --key-dir DIR --production) "
            "and DIR, its host key directory (master.key and the role keys, KEYFILES.md)",
        }[need]
        return why

    # ---- talking to the board ------------------------------------------------------------------------
    def exec(self, code, timeout=None):
        if self.production:
            raise RigError("a production board has no REPL: use its console (meterctl --key-dir)")
        with Remote(self.port, timeout=timeout or self.timeout) as dev:
            return dev.exec(code)

    def status(self):
        return json.loads(meterctl_ok("status", "--port", self.port, *self.role_args, "--json",
                                      "--timeout", self.timeout))

    def identity(self):
        return json.loads(meterctl_ok("id", "--port", self.port, *self.role_args, "--json",
                                      "--timeout", self.timeout))

    def console(self, role="reader", timeout=None):
        """A logged-in console session (production board) as `role`, with DIR/<role>.key."""
        from meterctl import production as prod
        return prod.Console(self.port, prod.KeyDir(self.key_dir).role_key(role), role,
                            timeout=timeout or self.timeout)

    def checkpoint_s(self):
        """The board's checkpoint interval, in metered (engine) seconds."""
        text = self.exec("import board\nprint(getattr(board, 'CHECKPOINT_S', 60))").strip()
        return float(text.splitlines()[-1])

    def wall_s(self, metered_s):
        """Wall seconds the board takes to meter `metered_s` seconds (the virtual board runs faster)."""
        return metered_s / float(SIM_SPEED) if self.virtual else metered_s

    def wait_answering(self, timeout=60.0):
        """Until the board's REPL answers again (after a reset or a power cycle)."""
        deadline = time.monotonic() + timeout
        last = None
        # A production board is up once its console answers (as on a real rig): the virtual board's own
        # readiness for it comes from the port's SIGINT handler, which the 32-bit build does not always
        # show after a power cut.
        if self.vboard is not None and not self.production and not self.vboard.wait_ready(timeout):
            vb = self.vboard
            raise RigError("the virtual board did not boot: %s (boot %d, last exit %s, last line %r)"
                           % (vb.error or "timed out", vb.boots, vb.last_exit, vb.last_output_line()))
        if self.production:
            self._wait_console(deadline)
            return
        while time.monotonic() < deadline:
            try:
                if self.exec("print(6 * 7)", timeout=3).strip() == "42":
                    return
            except RemoteError as e:
                last = e
            time.sleep(0.5)
        raise RigError("the board on %s did not answer within %gs: %s" % (self.port, timeout, last))

    def _wait_console(self, deadline):
        """Until the production console answers hello and a reader's status (after a boot)."""
        from meterctl import production as prod
        mode = prod.wait_for_console(self.port, timeout=max(1.0, deadline - time.monotonic()))
        if mode != "production":
            raise RigError("the console on %s says mode %r, not production" % (self.port, mode))
        self.wait_status(lambda s: True, "a status over the console", max(1.0, deadline - time.monotonic()))

    def wait_status(self, accept, what, timeout=60.0):
        """Poll the status until accept(status) is true; RigError naming `what` otherwise."""
        deadline = time.monotonic() + timeout
        status = err = None
        while time.monotonic() < deadline:
            code, out, err = meterctl("status", "--port", self.port, *self.role_args, "--json",
                                      "--timeout", self.timeout)
            if code == 0:
                status = json.loads(out)
                if accept(status):
                    return status
            time.sleep(0.3)
        raise RigError("%s: not seen within %gs (last status %s, error %s)"
                       % (what, timeout, json.dumps(status)[:400] if status else None, (err or "").strip()))

    def wait_windows(self, more=2, timeout=60.0):
        """A status once the meter has computed `more` windows beyond the current ones (it runs)."""
        try:
            start = self.status().get("windows") or 0
        except RigError:
            start = 0
        return self.wait_status(lambda s: (s.get("windows") or 0) >= start + more,
                                "the meter computing %d more windows" % more, timeout)

    # ---- physical acts ---------------------------------------------------------------------------------
    def reset(self, timeout=60.0):
        """A hard reset; returns once the REPL answers again."""
        if self.virtual:
            self.vboard.restart()
        else:
            try:
                with Remote(self.port, timeout=3) as dev:
                    dev.exec("import machine\nmachine.reset()", timeout=3)
            except RemoteError:
                pass  # the port goes away with the reset, or the board is resetting itself already
            time.sleep(1.0)
        self.wait_answering(timeout)

    def power_cycle(self, timeout=90.0):
        """Cut the supply and restore it; returns once the REPL answers again."""
        if self.virtual:
            self.vboard.power_cut()
        else:
            proc = subprocess.run(self.power_cycle_cmd, shell=True, capture_output=True, text=True,
                                  timeout=timeout)
            if proc.returncode != 0:
                raise RigError("--power-cycle command failed (exit %d): %s"
                               % (proc.returncode, (proc.stderr or proc.stdout).strip()[-300:]))
            time.sleep(1.0)
        self.wait_answering(timeout)

    # ---- host tools as a user runs them ---------------------------------------------------------------
    def deploy(self):
        """`meterctl deploy` then a reset: stdout of the deploy."""
        out = meterctl_ok("deploy", "--board", self.board, "--port", self.port, "--timeout", self.timeout)
        self.reset()
        return out

    def export(self, out_file):
        """`meterctl export --port`: (exit status, stderr); the records as JSON in out_file on success.
        A production board: over the console as reader, verified with --key-dir DIR's master.key."""
        code, _, err = meterctl("export", "--port", self.port, *self.key_args, "--format", "json",
                                "--out", out_file, "--board", self.board, "--timeout", 30)
        return code, err


def records_of(path):
    rows = json.loads(Path(path).read_text())
    return rows["records"] if isinstance(rows, dict) else rows


def registers(status):
    return dict(status.get("registers_wh") or {})


def close_enough(got, want, tol):
    return got is not None and math.isfinite(got) and abs(got - want) <= tol


# ---- update bundles ---------------------------------------------------------------------------------
class Signer:
    """An Ed25519 update-signing key file and the bundles it signs (meterctl keys/bundle, as a user)."""

    def __init__(self, key_file, work_dir):
        self.key = Path(key_file)
        self.pub = Path(str(key_file) + ".pub")
        self.work = Path(work_dir)

    @classmethod
    def throwaway(cls, work_dir):
        """A new key in work_dir (the virtual board only: its trust store dies with it)."""
        key = Path(work_dir) / "hil-throwaway.key"
        meterctl_ok("keys", "new", "--alg", "ed25519", "--out", key)
        return cls(key, work_dir)

    def bundle(self, board, version, counter, firmware=None):
        """A signed bundle of the firmware (or of another firmware tree): (path, software id)."""
        raw = self.work / ("%s.unsigned.bnd" % version)
        signed = self.work / ("%s.bnd" % version)
        args = ["bundle", "build", "--board", board, "--version", version, "--counter", counter,
                "--out", raw]
        if firmware is not None:
            args += ["--firmware", firmware]
        meterctl_ok(*args)
        meterctl_ok("bundle", "sign", "--key", self.key, raw, "-o", signed)
        return signed, software_id_of(signed)


def software_id_of(bundle_file):
    """The software id `meterctl bundle show` prints for a bundle."""
    for line in meterctl_ok("bundle", "show", bundle_file).splitlines():
        if line.startswith("software id"):
            return line.split()[-1]
    raise RigError("meterctl bundle show printed no software id for %s" % bundle_file)


def crashing_firmware(dest):
    """A copy of firmware/ whose app raises at import (the boot stage's trial boot must roll it back)."""
    dest = Path(dest)
    shutil.copytree(ROOT / "firmware", dest, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
    app = dest / "umeter" / "app.py"
    app.write_text('raise RuntimeError("hil: this app crashes at import")\n' + app.read_text())
    return dest


def forge(bundle_file, offset, dest):
    """A copy of a bundle with the byte at `offset` changed (negative: from the end)."""
    data = bytearray(Path(bundle_file).read_bytes())
    data[offset] ^= 0x20
    Path(dest).write_bytes(bytes(data))
    return Path(dest)


def manifest_offset(bundle_file, text):
    """The offset of `text` (e.g. the version) inside the signed manifest: changing a byte there keeps the
    manifest parseable, so only the signature can catch it."""
    data = Path(bundle_file).read_bytes()
    manifest_len = int.from_bytes(data[10:12], "big")
    at = data.find(text.encode(), 14, 14 + manifest_len)
    if at < 0:
        raise RigError("%r is not in the manifest of %s" % (text, bundle_file))
    return at


# ---- production boards: what anyone on the serial line gets without a key ------------------------------
MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def unauthenticated(port, command, payload=b"", timeout=3.0):
    """Send one console request without logging in (no session, no MAC), as anyone with a cable can:
    (error name or None, answer payload)."""
    import serial
    from meterctl import mpcompat

    mpcompat.install()
    from umeter.console import framing, roles

    decoder = framing.Decoder()
    with serial.Serial(port, 115200, timeout=0.02) as ser:
        ser.reset_input_buffer()
        ser.write(framing.encode(roles.CODES[command], 1, payload))
        ser.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in decoder.feed(ser.read(256), int(time.monotonic() * 1000)):
                if isinstance(r, int) or not r.flags & framing.FLAG_RESPONSE or r.seq not in (0, 1):
                    continue  # line noise, our own echo, a stale answer
                if r.flags & framing.FLAG_ERROR:
                    code = framing.parse_error(r.payload)[0]
                    return framing.ERROR_NAMES.get(code, "error_%d" % code), b""
                return None, r.payload
    raise RigError("no console answer to %s on %s within %gs" % (command, port, timeout))


def mpremote_exec(port, code, timeout=6.0):
    """`mpremote connect PORT resume exec CODE`: (exit status or None on its time-out, output)."""
    try:
        p = subprocess.run([MPREMOTE, "connect", port, "resume", "exec", code], capture_output=True,
                           text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout or b""
        return None, out.decode("utf-8", "replace") if isinstance(out, bytes) else out


def raw_repl_attempt(port, wait_s=1.0):
    """The bytes a board answers to Ctrl-C, raw REPL (Ctrl-A) + a statement + Ctrl-D, paste mode (Ctrl-E),
    friendly REPL (Ctrl-B) + a statement: a closed REPL answers none of them with Python."""
    import serial

    with serial.Serial(port, 115200, timeout=0.1) as s:
        s.write(b"\r\x03\x03\x01print('PWN'+'ED')\x04\x05print('PA'+'STE')\x04\x02\r\nprint('FR'+'IEND')\r\n")
        s.flush()
        time.sleep(wait_s)
        return s.read(65536)
