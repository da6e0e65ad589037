"""The virtual board: the firmware on the MicroPython unix port, behind a pty that behaves like a board's
USB serial port, so ``mpremote connect /dev/pts/N ...`` and meterctl work against it as against hardware.

    with VirtualBoard("sim_state", main=None) as vb:    # main: a host script replacing the board's main.py
        print(vb.pty_path)                               # give this to mpremote
        vb.power_cut()                                   # power-fail warning, hold-up, SIGKILL, boot again
        vb.restart()                                     # a hard reset (reset button: no warning)

How it works (processes, pty bridge, resets, power-fail input) and what was found out about the unix
port: VBOARD.md next to this file.
"""
import errno
import fcntl
import os
import random
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import tty
from pathlib import Path

from meterctl.powerfail import DEFAULT_HOLD_UP_MS, PowerFailLine

__all__ = ["DEFAULT_HOLD_UP_MS", "ROOT", "VirtualBoard", "VirtualBoardError", "find_micropython"]
ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "host_tools" / "vboard" / "boardfs.py"
HARD_RESET_STATUS = 86  # vboard/boardfs.py and vboard/vbmachine.py use the same value
SANDBOX_FAILED_STATUS = 87  # vboard/boardfs.py could not mount the board directory as /
CRASH_LOOP = 5           # this many boots in a row that end before reaching the REPL: give up
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_PROMPT = b">>> "
SOFT_REBOOT = b"MPY: soft reboot\r\n"
READY_TIMEOUT = 10.0
GATE_TIMEOUT = 2.0       # longest hold on input after a Ctrl-C that interrupted running code
BOOT_HOLD = 3.0          # longest hold on input while a fresh process boots (main.py may run forever)
OUT_TAIL = 2048          # bytes of the firmware's output kept for error messages


class VirtualBoardError(Exception):
    pass


def find_micropython():
    """The unix port next to the running interpreter (the venv), else on PATH."""
    for cand in (Path(sys.executable).parent, Path(sys.argv[0]).resolve().parent):
        cand = cand / "micropython"
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    for d in os.environ.get("PATH", "").split(os.pathsep):
        cand = Path(d) / "micropython"
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    raise VirtualBoardError("MicroPython unix port not found (run `make setup`)")


def _set_raw(fd):
    tty.setraw(fd)


def _nonblock(fd):
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


def _read_available(fd):
    """What a non-blocking pty end has to read now; None when nothing (EAGAIN) or the other side is
    closed (EIO)."""
    try:
        return os.read(fd, 4096)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EIO):
            return None
        raise


class VirtualBoard:
    def __init__(self, board_dir, main=None, heapsize="4M", repo=ROOT, board="sim", extra_path=(),
                 sandbox=True, raw_reset_runs_main=False, crlf=True, micropython=None, env=None, log=None,
                 hold_up_ms=DEFAULT_HOLD_UP_MS):
        """board_dir: the board's filesystem (created if missing). main: a host path to a script that
        replaces the board's main.py (None: the board's main.py, else <repo>/firmware/main.py).
        log: a callable taking one line, for host-side events (boots, exits, cuts)."""
        self.board_dir = Path(board_dir).resolve()
        self.main = str(Path(main).resolve()) if main else None
        self.heapsize = heapsize
        self.repo = Path(repo).resolve()
        self.source_dirs = [self.repo / "firmware", self.repo / "host_tools", self.repo / "boards" / board]
        self.source_dirs += [Path(p).resolve() for p in extra_path]
        self.sandbox = sandbox
        self.raw_reset_runs_main = raw_reset_runs_main
        self.crlf = crlf
        self.micropython = micropython or find_micropython()
        self.env = dict(env or {})
        self.log = log or (lambda line: None)
        self.hold_up_ms = hold_up_ms  # power-fail warning before each cut (simulated ms; 0: none)
        self._line = None             # the current process's power-fail input (PowerFailLine)
        self.boots = 0            # firmware processes started so far
        self.last_exit = None     # exit status of the previous firmware process
        self.error = None         # why the bridge stopped, if it failed
        self._out_tail = b""      # the end of the firmware's output (for error messages)
        self._early_exits = 0     # boots in a row that ended before their REPL came up
        self.pty_path = None
        self._proc = None
        self._thread = None
        self._lock = threading.Lock()
        self._requests = []       # (kind, threading.Event) handled by the bridge thread
        self._stop = threading.Event()
        self._cutter = None
        self.production = False   # the board's MCU-internal mode says the REPL is closed (console/MODE.md)
        self._sigint_seen = False
        self._reset_state()

    # ---- public API -------------------------------------------------------------------------------

    def start(self):
        self.board_dir.mkdir(parents=True, exist_ok=True)
        self._user_master, self._user_slave = os.openpty()
        _set_raw(self._user_slave)
        self.pty_path = os.ttyname(self._user_slave)
        self._fw_master, self._fw_slave = os.openpty()
        _nonblock(self._user_master)
        _nonblock(self._fw_master)
        self._boot(run_main=True)
        self._thread = threading.Thread(target=self._bridge, name="vboard-bridge", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._thread is None:
            return
        self._stop.set()
        if self._cutter is not None:
            self._cutter.join()
            self._cutter = None
        self._thread.join()
        self._thread = None
        if self._proc is not None and self._proc.poll() is None and self._line is not None:
            self._line.clean_stop()  # the meter books its open window and checkpoints first
        self._kill()
        for fd in (self._user_master, self._user_slave, self._fw_master, self._fw_slave):
            os.close(fd)

    def restart(self, timeout=READY_TIMEOUT):
        """Hard reset: end the firmware process and boot it again (main.py runs)."""
        self._request("restart", timeout)

    def power_cut(self, timeout=READY_TIMEOUT):
        """SIGKILL the firmware at this instant and boot it again (main.py runs)."""
        self._request("cut", timeout)

    def start_power_cuts(self, min_s=2.0, max_s=10.0, seed=None, hold_up_ms=None):
        """Cut power at random moments, uniformly spaced in [min_s, max_s] seconds, until stop()."""
        rng = random.Random(seed)
        if hold_up_ms is not None:
            self.hold_up_ms = hold_up_ms

        def loop():
            while not self._stop.wait(rng.uniform(min_s, max_s)):
                self.power_cut()

        self._cutter = threading.Thread(target=loop, name="vboard-power-cuts", daemon=True)
        self._cutter.start()

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Wait until the current firmware process has booted to its REPL; False on time-out."""
        return self._ready.wait(timeout)

    @property
    def pid(self):
        return self._proc.pid if self._proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- firmware process -------------------------------------------------------------------------

    def _reset_state(self):
        self._raw_mode = False    # is the firmware's REPL in raw mode (decides what a soft reset does)
        self._filter = None       # None, "prompt" or "raw": hiding the banner after a raw-REPL reset
        self._filter_buf = b""
        self._filter_deadline = 0.0
        self._pending_in = b""    # user input not yet written to the firmware
        self._gate = 0.0          # while non-zero: input held (deadline) until the REPL reads again
        self._no_reader = False   # output was dropped because nobody read the user's pty
        self._hold = 0.0          # while non-zero: input held (deadline) until the new process is ready
        self._ready = threading.Event()
        self._last_out = b""      # last byte sent to the user (for \n -> \r\n)
        self._tail = b""          # end of the output so far (a banner may span two reads)

    def _command(self):
        return [self.micropython, "-X", "heapsize=" + self.heapsize, str(BOOTSTRAP)]

    def _environment(self, run_main):
        env = dict(os.environ)
        env.pop("MICROPYINSPECT", None)  # boardfs.py sets it once the boot went well
        env.update(self.env)
        dirs = [str(p) for p in self.source_dirs if p.is_dir()]
        env["MICROPYPATH"] = ":".join([".frozen"] + dirs)
        env["UMETER_VB_PATH"] = ":".join(dirs)
        if self.sandbox:
            env["UMETER_VB_DIR"] = str(self.board_dir)
        else:
            env["UMETER_VB_NO_SANDBOX"] = "1"
        if self.main:
            env["UMETER_VB_MAIN"] = self.main
        if not run_main:
            env["UMETER_VB_SKIP_MAIN"] = "1"
        return env

    def _boot(self, run_main, enter_raw=False):
        slave = self._fw_slave
        # A killed process may leave the pty in its REPL's raw mode and unread input behind.
        _set_raw(slave)
        termios.tcflush(slave, termios.TCIOFLUSH)

        def become_session_leader():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.production = self._locked_mode()
        self._sigint_seen = False
        line = self._line = PowerFailLine(self.hold_up_ms)
        env = self._environment(run_main)
        env.update(line.env())
        self._proc = subprocess.Popen(
            self._command(), stdin=slave, stdout=slave, stderr=slave, cwd=str(self.board_dir),
            env=env, preexec_fn=become_session_leader, close_fds=True, pass_fds=line.child_fds(),
            umask=0o077)
        line.started()
        self.boots += 1
        self._raw_mode = False
        self._tail = b""
        self._gate = 0.0
        self._ready.clear()
        # Input typed during boot would interrupt boardfs.py/main.py (mpremote starts with Ctrl-C).
        self._hold = time.monotonic() + BOOT_HOLD
        self._filter = "prompt" if enter_raw else None
        self._filter_buf = b""
        self._filter_deadline = time.monotonic() + READY_TIMEOUT
        self.log("boot %d: pid %d%s" % (self.boots, self._proc.pid, "" if run_main else " (main.py skipped)"))

    def _locked_mode(self):
        """Production mode (or a reset under way): the line carries console frames, not REPL text, so
        its bytes are passed on uncooked, and the board is ready once it stops catching SIGINT
        (serve.lock_repl) instead of at a prompt it never shows."""
        keys = self.env.get("UMETER_KEYS_DIR") or str(self.board_dir / "keys")
        try:
            from meterctl.production import board_mode
            return board_mode(keys).locked
        except Exception:
            return False

    def _production_ready(self):
        if self._executing():
            self._sigint_seen = True  # the port runs Python: its SIGINT handler is in place
        elif self._sigint_seen and self._proc.poll() is None:
            self._set_ready()

    def _kill(self):
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()
            self.last_exit = proc.returncode
        if self._line is not None:
            self._line.close()
            self._line = None

    # ---- bridge -----------------------------------------------------------------------------------

    def _request(self, kind, timeout):
        if self._thread is None:
            raise VirtualBoardError("virtual board not started")
        done = threading.Event()
        with self._lock:
            self._requests.append((kind, done))
        deadline = time.monotonic() + timeout
        while not done.wait(0.05):
            if self._stop.is_set():
                return
            if self.error is not None or time.monotonic() > deadline:
                raise VirtualBoardError("virtual board did not %s: %s" % (kind, self.error or "timed out"))

    def _bridge(self):
        try:
            self._bridge_loop()
        except Exception as e:  # keep the reason; the board is dead without the bridge
            self.error = "%s: %s" % (type(e).__name__, e)
            self.log("bridge failed: " + self.error)

    def _bridge_loop(self):
        while not self._stop.is_set():
            with self._lock:
                requests, self._requests = self._requests, []
            for kind, done in requests:
                self._hard_reset(kind)
                done.set()
            held = self._gate or self._hold or self._filter is not None
            wlist = [self._fw_master] if self._pending_in and not held else []
            try:
                readable, writable, _ = select.select([self._user_master, self._fw_master], wlist, [],
                                                      0.01 if held else 0.05)
            except InterruptedError:
                continue
            if self._fw_master in readable:
                self._pump_output()
            if self._user_master in readable:
                self._pump_input()
            if self._pending_in and self._filter is None:
                self._flush_input()
            if self._filter is not None and time.monotonic() > self._filter_deadline:
                self.log("firmware did not reach the REPL; showing its output as is")
                self._emit(self._filter_buf)
                self._filter, self._filter_buf = None, b""
            if self.production and not self._ready.is_set():
                self._production_ready()
            if self._proc.poll() is not None:
                self._on_exit()

    def _hard_reset(self, kind):
        if kind == "cut" and self._line is not None and self._proc.poll() is None:
            self._line.warn()  # the supervisor's warning, then the hold-up time runs out
        self._kill()
        self._drain_output(forward=(kind != "cut"))  # a power cut loses what the UART had not sent
        what = "power cut" if kind == "cut" else "hard reset"
        self.log("%s (firmware exit status %s)" % (what, self.last_exit))
        self._pending_in = b""
        self._boot(run_main=True)

    def _on_exit(self):
        self._kill()  # reaps it and closes its power-fail line
        status = self.last_exit
        self._drain_output(forward=True)
        self._early_exits = 0 if self._ready.is_set() else self._early_exits + 1
        if status == SANDBOX_FAILED_STATUS or self._early_exits >= CRASH_LOOP:
            why = "sandbox failed" if status == SANDBOX_FAILED_STATUS else "crash loop"
            self.error = "firmware %s (exit status %s); not booting again" % (why, status)
            last = self.last_output_line()
            if last:
                self.error += "; its last line: " + last
            self.log(self.error)
            self._stop.set()
            return
        if status == HARD_RESET_STATUS or (status is not None and status < 0):
            self._pending_in = b""  # a reset board's UART starts empty
        if status == HARD_RESET_STATUS:
            self.log("machine.reset()")
            self._boot(run_main=True)
        elif status is not None and status < 0:
            self.log("firmware died (signal %d); booting again" % -status)
            self._boot(run_main=True)
        else:
            # Soft reset: what a board prints, then the REPL comes back in the mode it was in.
            raw = self._raw_mode
            self._emit(SOFT_REBOOT)
            self._boot(run_main=self.raw_reset_runs_main or not raw, enter_raw=raw)

    def _drain_output(self, forward):
        while True:
            data = _read_available(self._fw_master)
            if not data:
                return
            if forward:
                self._handle_output(data)

    def _pump_output(self):
        data = _read_available(self._fw_master)
        if data is not None:
            self._handle_output(data)

    def last_output_line(self):
        """The firmware's last non-empty output line (why it stopped, when it crashed), or ''."""
        lines = [ln.strip() for ln in self._out_tail.decode("utf-8", "replace").splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith(">>>")]
        return lines[-1] if lines else ""

    def _handle_output(self, data):
        self._out_tail = (self._out_tail + data)[-OUT_TAIL:]
        if self._filter is None:
            self._track_mode(data)
            self._emit(data)
            return
        self._filter_buf += data
        buf = self._filter_buf
        if self._filter == "prompt":
            if buf.endswith(FRIENDLY_PROMPT):
                # Keep what main.py / boot printed, hide the banner, ask for the raw REPL.
                banner = buf.rfind(b"MicroPython ")
                self._emit(buf[:banner] if banner >= 0 else b"")
                self._filter, self._filter_buf = "raw", b""
                os.write(self._fw_master, b"\x01")
        elif self._filter == "raw":
            at = buf.find(RAW_BANNER)
            if at >= 0:
                self._filter, self._filter_buf = None, b""
                self._raw_mode = True
                self._emit(buf[at:])
                self._set_ready()

    def _track_mode(self, data):
        seen = self._tail + data
        if not self._ready.is_set() and FRIENDLY_PROMPT in seen:
            self._set_ready()
        if RAW_BANNER in seen:
            self._raw_mode = True
            seen = b""
        self._tail = seen[-len(RAW_BANNER):]

    def _set_ready(self):
        self._hold = 0.0
        self._ready.set()

    def _pump_input(self):
        data = _read_available(self._user_master)
        if data is None:
            return
        if b"\x02" in data:
            self._raw_mode = False  # Ctrl-B: back to the friendly REPL
        self._pending_in += data

    def _executing(self):
        """True while the firmware runs Python code: the unix port catches SIGINT only then."""
        try:
            with open("/proc/%d/status" % self._proc.pid) as f:
                for line in f:
                    if line.startswith("SigCgt:"):
                        return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
        except (OSError, ValueError):
            pass
        return False

    def _at_repl(self):
        return not self._executing() and not termios.tcgetattr(self._fw_slave)[3] & termios.ISIG

    def _flush_input(self):
        if self._hold:
            if time.monotonic() < self._hold:
                return
            self._hold = 0.0
        if self._gate:
            if not self._at_repl() and time.monotonic() < self._gate:
                return
            self._gate = 0.0
        data = self._pending_in
        cut = data.find(b"\x03")
        if cut >= 0 and self._executing():
            # A board's UART sees Ctrl-C while code runs; the unix port needs SIGINT (its tty may be raw
            # then, e.g. under raw-paste). When that code ends the port may switch its tty with
            # TCSAFLUSH, discarding unread input, so hold what follows (mpremote's Ctrl-A) until its REPL
            # reads again.
            if cut > 0:
                self._write_fw(data[:cut])
                return
            self._pending_in = data[1:]
            os.kill(self._proc.pid, signal.SIGINT)
            self._gate = time.monotonic() + GATE_TIMEOUT
            return
        self._write_fw(data)

    def _write_fw(self, data):
        try:
            n = os.write(self._fw_master, data)
        except OSError as e:
            if e.errno != errno.EAGAIN:
                raise
            n = 0
        self._pending_in = self._pending_in[n:]

    def _emit(self, data):
        if not data:
            return
        if self.crlf and not self.production:
            data = self._cook(data)
        while data:
            try:
                n = os.write(self._user_master, data)
                data = data[n:]
                continue
            except OSError as e:
                if e.errno != errno.EAGAIN:
                    raise
            if not self._reader_moves(0.1 if self._no_reader else 0.5):
                # Nobody is reading: drop the stale output, like a UART with nothing attached.
                termios.tcflush(self._user_slave, termios.TCIFLUSH)
                self._no_reader = True

    def _reader_moves(self, patience):
        """True as soon as someone takes output from the user's pty, False after `patience` seconds."""
        queued = self._queued()
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            writable = select.select([], [self._user_master], [], 0.005)[1]
            if writable or self._queued() < queued:
                self._no_reader = False
                return True
        return False

    def _queued(self):
        return struct.unpack("i", fcntl.ioctl(self._user_slave, termios.TIOCINQ, b"\0\0\0\0"))[0]

    def _cook(self, data):
        # A lone \n becomes \r\n (a chunk may start with the \n of a \r\n split across reads).
        head = b""
        if self._last_out == b"\r" and data[:1] == b"\n":
            head, data = b"\n", data[1:]
        self._last_out = data[-1:] or self._last_out
        return head + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
