# The production-mode serial loop: the REPL is closed and stdin/stdout carry only console frames
# (FRAMING.md section 9). Reading never blocks: poll(0), then one byte at a time into a preallocated
# buffer, at most `chunk` bytes per turn, so the meter's step() runs between turns however busy the line.
import sys

import micropython
from micropython import const

DEFAULT_CHUNK = const(64)


def lock_repl():
    """Ctrl-C no longer raises KeyboardInterrupt; WebREPL is stopped where the port has it. (Raw REPL,
    paste mode and Ctrl-D are features of the REPL loop, which production mode never returns to.)"""
    micropython.kbd_intr(-1)
    try:
        import webrepl
        webrepl.stop()
    except Exception:  # no webrepl on this port, or not running
        pass


SAFE_STATE_TEXT = "safe state: no verified app"


class SafeConsole:
    """The line of a locked board in the boot stage's safe state (no verified app: SLOTS.md section 6).
    No session, no role key, no handler: hello gets the public line, every other frame an error frame
    (ERR_UNSUPPORTED, "safe state: no verified app: <why>"), a rejected frame its decoder error. Same
    feed()/poll() as console.Console, bounded per byte and per frame, never raises."""

    def __init__(self, public_line, reason="", ticks_ms=None):
        from umeter.console import framing, roles
        import time
        self._framing = framing
        self._hello = roles.HELLO
        self._public = bytes(public_line)[:framing.MAX_PAYLOAD]
        self._text = SAFE_STATE_TEXT + (": " + reason if reason else "")
        self._ticks = ticks_ms or time.ticks_ms
        self._decoder = framing.Decoder()

    def poll(self):
        return self.feed(b"")

    def feed(self, data):
        f = self._framing
        try:
            out = []
            refused = False
            for r in self._decoder.feed(data, self._ticks()):
                if isinstance(r, int):  # one answer per call for rejected bytes, as Console does
                    if not refused:
                        out.append(self._error(0, 0, r, ""))
                    refused = True
                elif r.flags & (f.FLAG_RESPONSE | f.FLAG_ERROR):
                    continue  # an answer echoed back (loopback): never answer it
                elif r.command == self._hello:
                    out.append(f.encode(r.command, r.seq, self._public, f.FLAG_RESPONSE))
                else:
                    out.append(self._error(r.command, r.seq, f.ERR_UNSUPPORTED, self._text))
            return b"".join(out)
        except Exception:
            self._decoder.reset()
            return b""

    def _error(self, command, seq, code, text):
        f = self._framing
        return f.encode(command, seq, f.error_payload(code, 0, text), f.FLAG_RESPONSE | f.FLAG_ERROR)


class StdioLine:
    """Non-blocking reads from sys.stdin, writes to sys.stdout (both binary)."""

    def __init__(self, stdin=None, stdout=None, chunk=DEFAULT_CHUNK):
        import select
        self._in = stdin if stdin is not None else sys.stdin
        self._bin = getattr(self._in, "buffer", self._in)
        out = stdout if stdout is not None else sys.stdout
        self._out = getattr(out, "buffer", out)
        self._poll = select.poll()
        self._poll.register(self._in, select.POLLIN)
        self._buf = bytearray(chunk)
        self._view = memoryview(self._buf)
        self._one = bytearray(1)
        self.closed = False

    def read(self):
        """The bytes waiting on the line (a view valid until the next read), without blocking."""
        n = 0
        size = len(self._buf)
        while n < size and self._poll.poll(0):
            if not self._bin.readinto(self._one):
                self.closed = True  # end of input (the unix port's pipe): a real UART never ends
                break
            self._buf[n] = self._one[0]
            n += 1
        return self._view[:n]

    def write(self, data):
        self._out.write(data)
        try:
            self._out.flush()
        except AttributeError:
            pass


def serve(console, step=None, line=None, idle_ms=2):
    """Run the console on `line` (default: stdin/stdout) for ever, calling `step()` (one turn of the
    meter) between reads; returns only when the line closes. Never raises: an exception in `step` is
    counted and the loop goes on (the meter's own fault handling records it)."""
    import time
    line = line if line is not None else StdioLine()
    faults = 0
    while not line.closed:
        data = line.read()
        out = console.feed(data) if len(data) else console.poll()
        if out:
            try:
                line.write(out)
            except Exception:
                faults += 1
        if step is not None:
            try:
                step()
            except Exception:
                faults += 1
        elif not len(data):
            time.sleep_ms(idle_ms)
    return faults
