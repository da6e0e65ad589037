"""A raw-REPL session with a board over its serial port (or the virtual board's pty), on the mpremote
library: one connection for many commands, ``resume`` semantics (no soft reset, so a running meter and
its watchdog keep going), bounded waits, and errors as one-line ``RemoteError``s.

    with Remote("/dev/ttyUSB0", timeout=5) as dev:
        out = dev.exec("print(1 + 1)")          # stdout of the code, as text
"""
import contextlib
import io
import os

from meterctl.cli import CliError

DEFAULT_TIMEOUT = 5.0


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
        raise CliError("no port given: use --port PORT (e.g. /dev/ttyUSB0, or the virtual board's "
                       "/dev/pts/N); %s" % hint)
    if os.sep in port and not os.path.exists(port):
        raise CliError("no such port: %s (is the board plugged in? `meterctl sim` prints the virtual "
                       "board's port)" % port)
    return port


def _last_line(text):
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no detail"


def _transport_class():
    from mpremote.transport_serial import SerialTransport

    class Transport(SerialTransport):
        """mpremote waits a fixed 10 s in places (the prompt before a command, the end of a raw paste);
        use our time-out there too, so a device that stops answering is reported as promptly as at
        connect."""

        wait_s = DEFAULT_TIMEOUT

        def read_until(self, min_num_bytes, ending, timeout=10, data_consumer=None, timeout_overall=None):
            if timeout == 10:
                timeout = self.wait_s
            return super().read_until(min_num_bytes, ending, timeout, data_consumer, timeout_overall)

    return Transport


class Remote:
    def __init__(self, port, timeout=DEFAULT_TIMEOUT):
        self.port = check_port(port)
        self.timeout = float(timeout)
        self._t = None

    def open(self):
        from mpremote.transport import TransportError

        try:
            self._t = _transport_class()(self.port, baudrate=115200, timeout=self.timeout)
            self._t.wait_s = self.timeout
        except (TransportError, OSError) as e:
            why = "permission denied (on Linux: join the dialout group)" \
                if os.path.exists(self.port) and not os.access(self.port, os.R_OK | os.W_OK) \
                else "in use by another program?" if os.path.exists(self.port) else str(e)
            raise RemoteError("cannot open port %s: %s" % (self.port, why)) from None
        try:
            # mpremote prints what it saw when it fails; keep our error to one line.
            with contextlib.redirect_stdout(io.StringIO()):
                self._t.enter_raw_repl(soft_reset=False, timeout_overall=self.timeout)
        except (TransportError, OSError):
            self._close_quietly()
            raise RemoteError("no answer from %s within %gs: not a MicroPython board, a program that ignores "
                              "Ctrl-C, or a closed (production) REPL" % (self.port, self.timeout)) from None
        return self

    def exec(self, code, timeout=None):
        """Run code on the device; its stdout as text. RemoteError if it raises or stops answering."""
        from mpremote.transport import TransportError

        if self._t is None:
            raise RemoteError("not connected")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                out, err = self._t.exec_raw(code, timeout=timeout or self.timeout)
        except (TransportError, OSError) as e:
            raise RemoteError("lost contact with %s: %s" % (self.port, _last_line(str(e)) or "timed out")) \
                from None
        if err:
            raise RemoteError("on the device: %s" % _last_line(err.decode("utf-8", "replace")))
        return out.decode("utf-8", "replace")

    def _close_quietly(self):
        t, self._t = self._t, None
        if t is None:
            return
        try:
            if t.in_raw_repl:
                t.exit_raw_repl()  # leave the friendly REPL for the next user, as mpremote does
        except OSError:
            pass
        try:
            t.close()
        except OSError:
            pass

    def close(self):
        self._close_quietly()

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()
