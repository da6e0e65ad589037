# The admin's OTA over the console (ota/CONSOLE_OTA.md): ota_begin / ota_data / ota_finish carry a signed
# bundle in frame-sized pieces into the same streaming installer the raw-REPL and HTTP paths use
# (ota/install.py), so every check is the installer's: signatures before any payload byte, board, security
# counter, expiry, per-file SHA-256, the power-safe slot switch and the trial boot. This module only moves
# bytes: it holds the bundle head until it is complete (bounded by the header), then one frame at a time.
# Each call does bounded work, so the serve loop's meter step runs between frames.
import json
import struct

from micropython import const

from umeter.console.console import CommandError
from umeter.console.framing import ERR_BAD_PAYLOAD, ERR_BUSY, MAX_PAYLOAD
from umeter.console.ticks import ticks_diff as _ticks_diff, ticks_ms as _default_ticks

VERSION = const(1)
HEADER_LEN = const(14)               # the bundle header (BUNDLE.md section 1), sent with ota_begin
MAX_CHUNK = MAX_PAYLOAD - 4          # ota_data: offset u32 || at most this many bundle bytes
IDLE_MS = const(300000)              # an update with no frame for 5 minutes is dropped (as a session)
_BEGIN_LEN = 1 + 4 + HEADER_LEN



def _installer_class():
    # Imported on the first ota_begin: a meter that is never updated never holds the OTA code in RAM.
    from umeter.ota.install import Installer

    class ConsoleInstaller(Installer):
        def abort(self):
            """Drop an unfinished install: the open file is closed (its bytes stay for a resume)."""
            self._close()
            self._dead = "aborted by a new ota_begin"

    return ConsoleInstaller


class OtaCommands:
    """OtaCommands(meter, board): the console's ota_begin, ota_data and ota_finish handlers (each takes
    the request payload, returns the answer bytes, raises CommandError to refuse). reboot_wanted() is
    True once after a successful ota_finish: the serve loop's owner then stops the meter and resets it.
    root, backend: the installer's (slots.py defaults: the port's slot root and MCU-internal backend).
    clock: Unix seconds for the expiry check; None: the meter's clock() (the operator's time base) where
    it has one, else 0; the trust store's clock floor is the lower bound either way (BUNDLE.md section 2)."""

    def __init__(self, meter, board, root=None, backend=None, clock=None, ticks_ms=None):
        self.meter = meter
        self.board = board
        self._root = root
        self._backend = backend
        self._clock = clock
        self._ticks = ticks_ms or _default_ticks
        self._reboot = False
        self._clear()

    def __repr__(self):
        return "<OtaCommands %s>" % self.state()

    def _clear(self):
        self._inst = None      # the installer once the head is verified
        self._head = None      # bytearray of the head while it is being received
        self._head_len = 0
        self._total = 0        # bundle length announced by ota_begin
        self._next = 0         # the bundle offset the next ota_data must start at
        self._last_ms = 0

    def state(self):
        """'idle', 'head' (receiving the head), 'payload' or 'complete' (all bytes in, ota_finish next)."""
        if self._head is not None:
            return "head"
        if self._inst is None:
            return "idle"
        return "complete" if self._next == self._total else "payload"

    def abort(self):
        """Drop an unfinished update (RAM state only; the slot keeps its bytes for a resume)."""
        if self._inst is not None:
            self._inst.abort()
        self._clear()

    def reboot_wanted(self):
        """True once after an update was installed: reboot into the trial slot (after the answer went out)."""
        want = self._reboot
        self._reboot = False
        return want

    def _refused(self, e):
        """The installer refused (it has counted and queued the rejection): the update is over."""
        self.abort()
        return CommandError(ERR_BAD_PAYLOAD, str(e))

    def _active(self):
        if self._head is None and self._inst is None:
            raise CommandError(ERR_BAD_PAYLOAD, "no update in progress: ota_begin first")
        now = self._ticks()
        if _ticks_diff(now, self._last_ms) > IDLE_MS:
            self.abort()
            raise CommandError(ERR_BAD_PAYLOAD, "the update timed out: ota_begin again")
        self._last_ms = now

    # --- commands ---------------------------------------------------------------------------------------
    def ota_begin(self, payload):
        """version u8 || bundle length u32 || the bundle's first 14 bytes. Answer: version u8 || next
        offset u32 (14) || largest chunk u16. Ends any unfinished update."""
        if len(payload) != _BEGIN_LEN or payload[0] != VERSION:
            raise CommandError(ERR_BAD_PAYLOAD, "version 1 u8 + bundle length u32 + 14-byte header")
        self.abort()
        total = struct.unpack_from(">I", payload, 1)[0]
        header = bytes(payload[5:])
        from umeter.ota import bundle
        try:
            m_len, s_len = bundle.parse_header(header)
        except bundle.BundleError as e:
            raise CommandError(ERR_BAD_PAYLOAD, str(e))
        head_len = HEADER_LEN + m_len + s_len    # <= 24,590 bytes: the header's own limits
        if total < head_len:
            raise CommandError(ERR_BAD_PAYLOAD, "bundle length %d below its head's %d" % (total, head_len))
        try:
            head = bytearray(head_len)
        except MemoryError:
            raise CommandError(ERR_BUSY, "no memory for a %d-byte bundle head" % head_len)
        head[:HEADER_LEN] = header
        self._head, self._head_len, self._total, self._next = head, head_len, total, HEADER_LEN
        self._last_ms = self._ticks()
        return struct.pack(">BIH", VERSION, HEADER_LEN, MAX_CHUNK)

    def ota_data(self, payload):
        """offset u32 || 1..1020 bundle bytes from that offset, which must be the answer of the previous
        ota_begin / ota_data. Answer: the next offset u32 (after the head: where the slot's resume
        point is; the host seeks there)."""
        self._active()
        if len(payload) < 5 or len(payload) > 4 + MAX_CHUNK:
            raise CommandError(ERR_BAD_PAYLOAD, "offset u32 + 1..%d bytes" % MAX_CHUNK)
        at = struct.unpack_from(">I", payload, 0)[0]
        if at != self._next:
            raise CommandError(ERR_BAD_PAYLOAD, "offset %d, expected %d" % (at, self._next), self._next)
        chunk = memoryview(payload)[4:]
        end = at + len(chunk)
        if end > self._total:
            self.abort()
            raise CommandError(ERR_BAD_PAYLOAD, "more bytes than the bundle length given to ota_begin")
        if self._head is not None:
            return self._head_data(at, end, chunk)
        from umeter.ota.verify import Refused
        try:
            pos = self._inst.write(chunk)
        except Refused as e:
            raise self._refused(e)
        except Exception:  # e.g. the filesystem is full: the position is unknown, the update is over
            self.abort()
            raise
        self._next = self._head_len + pos
        return struct.pack(">I", self._next)

    def _head_data(self, at, end, chunk):
        if end > self._head_len:
            raise CommandError(ERR_BAD_PAYLOAD, "a chunk must end at the head's end, byte %d"
                               % self._head_len, self._head_len)
        self._head[at:end] = chunk
        self._next = end
        if end < self._head_len:
            return struct.pack(">I", end)
        # The head is complete: the installer verifies it (signatures, board, counter, expiry) before it
        # takes any payload byte, and answers where the inactive slot's upload stands.
        from umeter.ota.verify import Refused
        inst = _installer_class()(self._root, self._backend, self._now())
        head, self._head = self._head, None
        try:
            pos = inst.begin(head)
        except Refused as e:
            raise self._refused(e)
        except Exception:
            self.abort()
            raise
        del head
        self._inst = inst
        self._next = self._head_len + pos
        if self._next > self._total:
            self.abort()
            raise CommandError(ERR_BAD_PAYLOAD, "the bundle is longer than the length given to ota_begin")
        return struct.pack(">I", self._next)

    def ota_finish(self, payload):
        """Empty. Every byte in: the installer checks the slot and switches to it (trial boot at the next
        reset). Answer: JSON {software_id, slot, trial_boots, reboot}; the meter then reboots."""
        self._active()
        if payload:
            raise CommandError(ERR_BAD_PAYLOAD, "ota_finish takes no payload")
        if self._inst is None or self._next != self._total:
            got = self._next
            self.abort()
            raise CommandError(ERR_BAD_PAYLOAD, "bundle incomplete: %d of %d bytes" % (got, self._total))
        from umeter.ota import slots
        from umeter.ota.verify import Refused
        try:
            sid = self._inst.finish()
        except Refused as e:
            raise self._refused(e)
        except Exception:
            self.abort()
            raise
        self._clear()
        self._reboot = True
        answer = {"software_id": sid, "reboot": True}
        try:  # what the switch wrote (the install stands even if this read fails)
            st = slots.load(self._boot_backend())
            answer["slot"], answer["trial_boots"] = slots.NAMES[st.active], st.attempts_left
        except Exception:
            pass
        return json.dumps(answer).encode()

    def _now(self):
        if self._clock is not None:
            return self._clock
        try:
            t = self.meter.clock()
        except Exception:  # no meter, or one without a clock
            return 0
        return t if isinstance(t, int) and t > 0 else 0

    def _boot_backend(self):
        if self._backend is None:
            from umeter.ota import slots
            return slots.default_backend()
        return self._backend
