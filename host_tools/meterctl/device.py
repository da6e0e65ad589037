"""Run code on a MicroPython device over its serial port (a real board or the virtual board's pty).

    with Device("/dev/ttyUSB0", timeout=10) as dev:
        dev.exec("def f(): ...")                           # stdout of the code, as text
        dev.exec("f()", on_line=handle)                    # each output line as it arrives
Errors are DeviceError with a one-line message (missing port, busy port, device not answering, time-out,
an exception on the device: its last traceback line). Built on mpremote's SerialTransport, entered the
way `mpremote connect PORT resume exec ...` does: Ctrl-C, raw REPL, no soft reset, so a running meter
(main.py's background loop) keeps running. Answers are read in bulk through one receive buffer (mpremote
reads a byte per call; a bulk read must not lose the next prompt, so the raw REPL exchange after
the connection, raw paste included, is done here), since exports stream megabytes."""
import contextlib
import io
import os
import struct
import time

DEFAULT_TIMEOUT = 10.0   # seconds: device silent this long = not answering
_READ_SLICE = 0.5        # longest single blocking serial read
_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"


class DeviceError(Exception):
    """The device cannot be reached or did not do what was asked (one-line message)."""


class DeviceExecError(DeviceError):
    """The code raised an exception on the device."""


def _looks_like_path(port):
    return port.startswith("/") or port.startswith(".") or os.sep in port


def _one_line(e):
    text = str(e).strip().splitlines()
    return text[-1].strip() if text else type(e).__name__


class Device:
    def __init__(self, port, timeout=DEFAULT_TIMEOUT, baudrate=115200):
        self.port = port
        self.timeout = float(timeout)
        self.baudrate = baudrate
        self._t = None
        self._rx = bytearray()

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    # --- connection ----------------------------------------------------------------------------------
    def open(self):
        if not self.port:
            raise DeviceError("no serial port given (use --port, e.g. /dev/ttyUSB0 or a virtual board's pty)")
        if _looks_like_path(self.port) and not os.path.exists(self.port):
            raise DeviceError("serial port %s does not exist (board unplugged, or virtual board not running?)"
                              % self.port)
        import serial
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self._t = SerialTransport(self.port, baudrate=self.baudrate,
                                          timeout=min(_READ_SLICE, self.timeout))
        except (TransportError, serial.SerialException, OSError, ValueError) as e:
            raise DeviceError("cannot open serial port %s: %s" % (self.port, _one_line(e))) from None
        try:
            # mpremote prints what it got when this fails: keep our output to one error line.
            with contextlib.redirect_stdout(io.StringIO()):
                self._t.enter_raw_repl(soft_reset=False, timeout_overall=self.timeout)
        except (TransportError, serial.SerialException, OSError) as e:
            self.close()
            raise DeviceError("the device on %s is not answering (no MicroPython raw REPL within %g s: %s)"
                              % (self.port, self.timeout, _one_line(e) or "time-out")) from None
        self._rx = bytearray()

    def close(self):
        t, self._t = self._t, None
        if t is None:
            return
        try:
            if t.in_raw_repl:
                t.exit_raw_repl()
        except Exception:  # closing a port that went away must not mask the real error
            pass
        try:
            t.close()
        except Exception:
            pass

    # --- receive buffer ------------------------------------------------------------------------------
    def _fill(self, deadline):
        """Append whatever arrives (waiting up to _READ_SLICE) to the buffer; False once past deadline."""
        ser = self._t.serial
        try:
            waiting = ser.in_waiting
        except OSError:
            waiting = 0
        data = ser.read(max(1, waiting))
        if data:
            self._rx.extend(data)
            return True
        return time.monotonic() < deadline

    def _read_until(self, ending, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            i = self._rx.find(ending)
            if i >= 0:
                out = bytes(self._rx[:i + len(ending)])
                del self._rx[:i + len(ending)]
                return out
            n = len(self._rx)
            if not self._fill(deadline):
                raise DeviceError("the device on %s went silent (%s)" % (self.port, what))
            if len(self._rx) > n:
                deadline = time.monotonic() + timeout

    def _read_exact(self, n, timeout, what):
        deadline = time.monotonic() + timeout
        while len(self._rx) < n:
            if not self._fill(deadline):
                raise DeviceError("the device on %s went silent (%s)" % (self.port, what))
        out = bytes(self._rx[:n])
        del self._rx[:n]
        return out

    # --- raw REPL exec -------------------------------------------------------------------------------
    def _send(self, code, timeout):
        """Submit code at the raw REPL prompt (raw-paste mode when the device has it, as mpremote does)."""
        ser = self._t.serial
        self._read_until(b">", timeout, "waiting for the raw REPL prompt")
        ser.write(b"\x05A\x01")
        answer = self._read_exact(2, timeout, "raw-paste handshake")
        if answer == b"R\x01":
            self._raw_paste(code, timeout)
            return
        if answer != b"R\x00":  # an old firmware echoed the bytes: wait for its raw REPL prompt again
            self._read_until(_RAW_BANNER[-8:] + b">", timeout, "raw REPL after the raw-paste probe")
        for i in range(0, len(code), 256):
            ser.write(code[i:i + 256])
            time.sleep(0.01)
        ser.write(b"\x04")
        if self._read_exact(2, timeout, "raw REPL accepting the code") != b"OK":
            raise DeviceError("the device on %s did not accept the code" % self.port)

    def _raw_paste(self, code, timeout):
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
                    raise DeviceError("the device on %s sent %r during raw paste" % (self.port, b))
            piece = code[i:i + remain]
            ser.write(piece)
            remain -= len(piece)
            i += len(piece)
        ser.write(b"\x04")
        self._read_until(b"\x04", timeout, "end of raw paste")

    def exec(self, code, on_line=None, timeout=None):
        """Run code on the device; returns its stdout (text). on_line(str) gets each line as it arrives.
        Raises DeviceExecError (last traceback line) or DeviceError (device silent for `timeout` s)."""
        import serial
        from mpremote.transport import TransportError

        if self._t is None:
            raise DeviceError("device %s is not open" % self.port)
        timeout = self.timeout if timeout is None else timeout
        try:
            self._send(code.encode() if isinstance(code, str) else bytes(code), timeout)
            out = self._stdout(on_line, timeout)
            err = self._read_until(b"\x04", timeout, "error output")[:-1]
        except (TransportError, serial.SerialException, OSError) as e:
            raise DeviceError("the device on %s stopped answering (%s)" % (self.port, _one_line(e))) from None
        except DeviceError:
            raise
        except Exception as e:  # e.g. struct.error from a half-answered handshake
            raise DeviceError("the device on %s answered garbage (%s)" % (self.port, _one_line(e))) from None
        err = err.decode("utf-8", "replace").strip()
        if err:
            lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
            raise DeviceExecError("on the device: %s" % (lines[-1] if lines else "error"))
        return out

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
                raise DeviceError("the device on %s went silent for %g s" % (self.port, timeout))
            if len(self._rx) > n:
                deadline = time.monotonic() + timeout
