"""A raw-REPL session with a board over its serial port (or the virtual board's pty): the one serial path
of meterctl (deploy, status, watch, export, provision).

    with Remote("/dev/ttyUSB0", timeout=5) as dev:
        out = dev.exec("print(1 + 1)")                 # stdout of the code, as text
        dev.exec("dump()", on_line=handle)             # each output line as it arrives
        platform, mpy = identify(dev)                  # sys.platform, sys.implementation._mpy

- The port is opened through mpremote's SerialTransport and entered as `mpremote connect P resume` does:
  Ctrl-C, raw REPL, no soft reset, so a running meter (main.py's loop) and its watchdog keep going.
- One connection serves many commands; close() then open() again reconnects (watch, after a reset).
- Every wait is bounded: `timeout` seconds of silence (or, while entering the raw REPL, in all) fail.
- Answers are read in bulk through one receive buffer (mpremote reads a byte per call, and exports
  stream megabytes), so the raw-REPL exchange after the entry, raw paste included, is done here.
- Every failure is one RemoteError (a CliError) with a one-line message: missing or busy port, device
  not answering, contact lost, or "on the device: <last traceback line>" when the code raised.
"""
import os
import struct
import time

from meterctl.cli import CliError

DEFAULT_TIMEOUT = 5.0
_READ_SLICE = 0.5        # longest single blocking serial read
_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
IDENTIFY_CODE = "import sys\nprint(sys.platform, getattr(sys.implementation, '_mpy', 0))"


class RemoteError(CliError):
    """The device could not be reached, stopped answering, or the code raised there."""


def available_ports():
    try:
        from serial.tools import list_ports

        return sorted(p.device for p in list_ports.comports())
    except Exception:  # listing ports is a hint only
        return []


def check_port(port):
    """A one-line error for a missing or absent port, before anything else happens."""
    if not port:
        found = available_ports()
        hint = ("serial ports found: " + ", ".join(found)) if found else "no serial ports found"
        raise RemoteError("no port given: use --port PORT (e.g. /dev/ttyUSB0, or the virtual board's "
                          "/dev/pts/N); %s" % hint)
    if (port.startswith(".") or os.sep in port) and not os.path.exists(port):
        raise RemoteError("no such port: %s does not exist (is the board plugged in? `meterctl sim` prints "
                          "the virtual board's port)" % port)
    return port


def identify(dev):
    """(sys.platform, sys.implementation._mpy) of the device: what MCU family and .mpy it runs."""
    out = dev.exec(IDENTIFY_CODE).split()
    if len(out) != 2 or not out[1].isdigit():
        raise RemoteError("the device on %s did not say what it is (%r)" % (dev.port, " ".join(out)[:60]))
    return out[0], int(out[1])


def _last_line(text):
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class Remote:
    def __init__(self, port, timeout=DEFAULT_TIMEOUT, baudrate=115200):
        self.port = check_port(port)
        self.timeout = float(timeout)
        self.baudrate = baudrate
        self._t = None
        self._rx = bytearray()
        self._raw_paste = True

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    @property
    def connected(self):
        return self._t is not None

    # --- connection ----------------------------------------------------------------------------------
    def open(self):
        """Connect (again, after close() or a lost connection) and enter the raw REPL. Returns self."""
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.close()
        try:
            self._t = SerialTransport(self.port, baudrate=self.baudrate,
                                      timeout=min(_READ_SLICE, self.timeout))
            self._t.serial.write_timeout = self.timeout
        except (TransportError, OSError, ValueError) as e:
            exists = os.path.exists(self.port)
            why = "permission denied (on Linux: join the dialout group)" \
                if exists and not os.access(self.port, os.R_OK | os.W_OK) \
                else "not a serial port, or in use by another program?" if exists else _last_line(e)
            raise RemoteError("cannot open port %s: %s" % (self.port, why)) from None
        self._rx = bytearray()
        self._raw_paste = True
        try:
            self._enter_raw_repl()
        except (RemoteError, OSError):
            self.close()
            raise RemoteError("no answer from %s within %gs: the device is not answering (not a MicroPython "
                              "board, a program that ignores Ctrl-C, or a closed (production) REPL)"
                              % (self.port, self.timeout)) from None
        return self

    def _enter_raw_repl(self):
        ser = self._t.serial
        deadline = time.monotonic() + self.timeout
        ser.write(b"\r\x03")        # Ctrl-C: interrupt a foreground program (not a soft reset)
        while ser.in_waiting and time.monotonic() < deadline:   # drop what the device said before
            ser.read(ser.in_waiting)
        ser.write(b"\r\x01")        # Ctrl-A: raw REPL
        self._read_until(_RAW_BANNER, self.timeout, "entering the raw REPL", overall=True)
        self._t.in_raw_repl = True

    def close(self):
        t, self._t = self._t, None
        if t is None:
            return
        try:
            if t.in_raw_repl:
                t.exit_raw_repl()  # leave the friendly REPL for the next user, as mpremote does
        except Exception:  # closing a port that went away must not mask the real error
            pass
        try:
            t.close()
        except Exception:
            pass

    # --- receive buffer ------------------------------------------------------------------------------
    def _silent(self, what):
        return RemoteError("lost contact with %s: the device went silent (%s)" % (self.port, what))

    def _fill(self, deadline):
        """Append whatever arrives (waiting up to _READ_SLICE) to the buffer; False once past deadline."""
        ser = self._t.serial
        data = ser.read(max(1, ser.in_waiting))
        if data:
            self._rx.extend(data)
            return True
        return time.monotonic() < deadline

    def _read_until(self, ending, timeout, what, overall=False):
        """Bytes up to and including `ending`; fails after `timeout` s of silence (in all, if overall)."""
        deadline = time.monotonic() + timeout
        while True:
            i = self._rx.find(ending)
            if i >= 0:
                out = bytes(self._rx[:i + len(ending)])
                del self._rx[:i + len(ending)]
                return out
            n = len(self._rx)
            if not self._fill(deadline):
                raise self._silent(what)
            if len(self._rx) > n and not overall:
                deadline = time.monotonic() + timeout

    def _read_exact(self, n, timeout, what):
        deadline = time.monotonic() + timeout
        while len(self._rx) < n:
            if not self._fill(deadline):
                raise self._silent(what)
        out = bytes(self._rx[:n])
        del self._rx[:n]
        return out

    # --- raw REPL exec -------------------------------------------------------------------------------
    def exec(self, code, on_line=None, timeout=None):
        """Run code on the device; returns its stdout (text). on_line(str) gets each line as it arrives.
        RemoteError when the code raises (its last traceback line) or the device is silent `timeout` s."""
        import serial
        from mpremote.transport import TransportError

        if self._t is None:
            raise RemoteError("not connected to %s" % self.port)
        timeout = self.timeout if timeout is None else timeout
        try:
            self._send(code.encode() if isinstance(code, str) else bytes(code), timeout)
            out = self._stdout(on_line, timeout)
            err = self._read_until(b"\x04", timeout, "error output")[:-1]
        except RemoteError:
            raise
        except (TransportError, serial.SerialException, OSError) as e:
            raise RemoteError("lost contact with %s: %s"
                              % (self.port, _last_line(e) or type(e).__name__)) from None
        except Exception as e:  # e.g. struct.error from a half-answered handshake
            raise RemoteError("lost contact with %s: garbled answer (%s)"
                              % (self.port, _last_line(e) or type(e).__name__)) from None
        err = _last_line(err.decode("utf-8", "replace"))
        if err:
            raise RemoteError("on the device: %s" % err)
        return out

    def exec_no_follow(self, code, timeout=None):
        """Submit code and return once the device accepted it, without waiting for its output (mpremote's
        exec_raw_no_follow): for code that resets the board while it would answer."""
        self._send(code.encode() if isinstance(code, str) else bytes(code),
                   self.timeout if timeout is None else timeout)

    def _send(self, code, timeout):
        """Submit code at the raw REPL prompt (raw-paste mode when the device has it, as mpremote does)."""
        ser = self._t.serial
        self._read_until(b">", timeout, "waiting for the raw REPL prompt")
        if self._raw_paste:
            ser.write(b"\x05A\x01")
            answer = self._read_exact(2, timeout, "raw-paste handshake")
            if answer == b"R\x01":
                self._paste(code, timeout)
                return
            self._raw_paste = False
            if answer != b"R\x00":  # an old firmware took the bytes as input: wait for its prompt again
                self._read_until(_RAW_BANNER[-8:] + b">", timeout, "raw REPL after the raw-paste probe")
        for i in range(0, len(code), 256):
            ser.write(code[i:i + 256])
            time.sleep(0.01)
        ser.write(b"\x04")
        if self._read_exact(2, timeout, "raw REPL accepting the code") != b"OK":
            raise RemoteError("lost contact with %s: the device did not accept the code" % self.port)

    def _paste(self, code, timeout):
        """Raw-paste mode: the device grants a window of bytes and sends 0x01 for each further window."""
        ser = self._t.serial
        window = struct.unpack("<H", self._read_exact(2, timeout, "raw-paste window"))[0]
        remain = window
        i = 0
        while i < len(code):
            while remain == 0 or self._rx or ser.in_waiting:
                b = self._read_exact(1, timeout, "raw-paste flow control")
                if b == b"\x01":
                    remain += window
                elif b == b"\x04":  # the device ended the paste early (e.g. out of memory)
                    ser.write(b"\x04")
                    return
                else:
                    raise RemoteError("lost contact with %s: the device sent %r during raw paste"
                                      % (self.port, b))
            piece = code[i:i + remain]
            ser.write(piece)
            remain -= len(piece)
            i += len(piece)
        ser.write(b"\x04")
        self._read_until(b"\x04", timeout, "end of raw paste")

    def _stdout(self, on_line, timeout):
        """Collect stdout up to its 0x04 terminator, passing complete lines to on_line as they come."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            end = self._rx.find(b"\x04")
            stop = end if end >= 0 else len(self._rx)
            nl = self._rx.rfind(b"\n", 0, stop)
            if nl >= 0 or end >= 0:
                take = stop if end >= 0 else nl + 1
                text = bytes(self._rx[:take]).decode("utf-8", "replace").replace("\r\n", "\n")
                del self._rx[:take + (1 if end >= 0 else 0)]
                out.append(text)
                if on_line is not None:
                    for line in text.splitlines():
                        on_line(line.rstrip("\r"))
                if end >= 0:
                    return "".join(out)
            n = len(self._rx)
            if not self._fill(deadline):
                raise self._silent("no output for %gs" % timeout)
            if len(self._rx) > n:
                deadline = time.monotonic() + timeout
