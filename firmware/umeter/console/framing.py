# Frames of the production-mode console (FRAMING.md next to this file): an encoder and an incremental
# decoder that is fed byte chunks as they arrive. The decoder owns one preallocated buffer of MAX_FRAME
# bytes and allocates nothing while it hunts for a start byte or collects a frame; only a finished frame
# or an error allocates its result. Pure logic: runs on MicroPython and (through meterctl.mpcompat) on
# CPython, where the viper helpers run as plain Python.
import micropython
from micropython import const

START = const(0xA5)
VERSION = const(1)
HEADER = const(9)           # start, version, length u16, flags, command, seq u24
MAC_LEN = const(16)
CRC_LEN = const(2)
MAX_PAYLOAD = const(1024)
MAX_FRAME = const(1051)     # HEADER + MAX_PAYLOAD + MAC_LEN + CRC_LEN
MAX_SEQ = const(0xFFFFFF)
FRAME_TIMEOUT_MS = const(2000)

FLAG_RESPONSE = const(1)    # device -> host
FLAG_ERROR = const(2)       # payload is an error: code u8, arg u32, text
FLAG_MAC = const(4)         # a 16-byte session MAC follows the payload
FLAG_ENC = const(8)         # payload encrypted with the session key (needs FLAG_MAC)
_FLAGS_KNOWN = const(15)

# Error codes (the first payload byte of an error frame). Codes 1..5 come from the decoder itself.
ERR_BAD_CRC = const(1)
ERR_TOO_LONG = const(2)
ERR_BAD_VERSION = const(3)
ERR_MALFORMED = const(4)
ERR_TIMEOUT = const(5)
ERR_UNKNOWN_COMMAND = const(6)
ERR_NOT_AUTHENTICATED = const(7)
ERR_FORBIDDEN = const(8)
ERR_BAD_MAC = const(9)
ERR_REPLAY = const(10)
ERR_BACKOFF = const(11)
ERR_AUTH_FAILED = const(12)
ERR_NO_CHALLENGE = const(13)
ERR_NO_KEY = const(14)
ERR_BAD_PAYLOAD = const(15)
ERR_NEEDS_ENCRYPTION = const(16)
ERR_UNSUPPORTED = const(17)
ERR_BUSY = const(18)
ERR_INTERNAL = const(19)

ERROR_NAMES = {
    ERR_BAD_CRC: "bad_crc", ERR_TOO_LONG: "too_long", ERR_BAD_VERSION: "bad_version",
    ERR_MALFORMED: "malformed", ERR_TIMEOUT: "timeout", ERR_UNKNOWN_COMMAND: "unknown_command",
    ERR_NOT_AUTHENTICATED: "not_authenticated", ERR_FORBIDDEN: "forbidden", ERR_BAD_MAC: "bad_mac",
    ERR_REPLAY: "replay", ERR_BACKOFF: "backoff", ERR_AUTH_FAILED: "auth_failed",
    ERR_NO_CHALLENGE: "no_challenge", ERR_NO_KEY: "no_key", ERR_BAD_PAYLOAD: "bad_payload",
    ERR_NEEDS_ENCRYPTION: "needs_encryption", ERR_UNSUPPORTED: "unsupported", ERR_BUSY: "busy",
    ERR_INTERNAL: "internal",
}
MAX_ERROR_TEXT = const(64)
MAX_ERROR_ARG = const(0x3FFFFFFF)  # a small int on every port

_EMPTY = ()

try:
    from time import ticks_diff as _ticks_diff
except ImportError:  # CPython: the console's tick source there does not wrap
    def _ticks_diff(a, b):
        return a - b


@micropython.viper
def crc16(buf: ptr8, start: int, end: int) -> int:
    # CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor): 16-bit words only.
    crc = 0xFFFF
    i = start
    while i < end:
        crc = crc ^ (int(buf[i]) << 8)
        j = 0
        while j < 8:
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
            j += 1
        i += 1
    return crc


@micropython.viper
def _find(src: ptr8, i: int, n: int, b: int) -> int:
    while i < n:
        if int(src[i]) == b:
            return i
        i += 1
    return -1


@micropython.viper
def _copy(dst: ptr8, doff: int, src: ptr8, soff: int, n: int):
    # forward copy: safe for the decoder's downward shifts (dst below src)
    i = 0
    while i < n:
        dst[doff + i] = src[soff + i]
        i += 1


class Frame:
    """One decoded frame. `mac` is None unless FLAG_MAC was set."""

    def __init__(self, command, flags, seq, payload, mac):
        self.command = command
        self.flags = flags
        self.seq = seq
        self.payload = payload
        self.mac = mac

    def __repr__(self):
        return "<Frame cmd=0x%02x flags=%d seq=%d len=%d>" % (self.command, self.flags, self.seq,
                                                              len(self.payload))


def frame_size(payload_len, with_mac):
    return HEADER + payload_len + (MAC_LEN if with_mac else 0) + CRC_LEN


def encode(command, seq, payload=b"", flags=0, mac=None):
    """The bytes of one frame. FLAG_MAC is set exactly when `mac` (16 bytes) is given."""
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError("frame payload too long (%d > %d)" % (n, MAX_PAYLOAD))
    if not 0 <= seq <= MAX_SEQ or not 0 <= command <= 255 or flags & ~_FLAGS_KNOWN:
        raise ValueError("frame field out of range")
    flags &= ~FLAG_MAC
    if mac is not None:
        if len(mac) != MAC_LEN:
            raise ValueError("frame MAC must be %d bytes" % MAC_LEN)
        flags |= FLAG_MAC
    elif flags & FLAG_ENC:
        raise ValueError("an encrypted frame needs a MAC")
    out = bytearray(frame_size(n, mac is not None))
    out[0] = START
    out[1] = VERSION
    out[2] = n >> 8
    out[3] = n & 0xFF
    out[4] = flags
    out[5] = command
    out[6] = seq >> 16
    out[7] = (seq >> 8) & 0xFF
    out[8] = seq & 0xFF
    out[HEADER:HEADER + n] = payload
    end = HEADER + n
    if mac is not None:
        out[end:end + MAC_LEN] = mac
        end += MAC_LEN
    crc = crc16(out, 0, end)
    out[end] = crc >> 8
    out[end + 1] = crc & 0xFF
    return bytes(out)


def error_payload(code, arg=0, text=""):
    """code u8, arg u32 (0..MAX_ERROR_ARG), text (UTF-8, at most MAX_ERROR_TEXT bytes)."""
    if arg < 0:
        arg = 0
    elif arg > MAX_ERROR_ARG:
        arg = MAX_ERROR_ARG
    t = text.encode()[:MAX_ERROR_TEXT]
    return bytes((code & 0xFF, arg >> 24, (arg >> 16) & 0xFF, (arg >> 8) & 0xFF, arg & 0xFF)) + t


def parse_error(payload):
    """(code, arg, text) of an error frame's payload; arg is 0 and text '' when they are missing."""
    if not payload:
        return ERR_MALFORMED, 0, "empty error frame"
    arg = 0
    if len(payload) >= 5 and payload[1] < 0x40:  # the arg stays a small int on 32-bit ports
        arg = (payload[1] << 24) | (payload[2] << 16) | (payload[3] << 8) | payload[4]
    try:
        text = bytes(payload[5:]).decode()
    except UnicodeError:
        text = ""
    return payload[0], arg, text


class Decoder:
    """Incremental decoder. feed(data, now_ms) -> a sequence of results, in arrival order: a Frame for
    every well-formed frame, an int error code (ERR_BAD_CRC, ERR_TOO_LONG, ERR_BAD_VERSION, ERR_MALFORMED,
    ERR_TIMEOUT) for every rejected one. After a rejected header or CRC only its start byte is dropped:
    the bytes already buffered are searched again for the next start byte, so a good frame behind garbage
    is found. A frame must complete within timeout_ms of its start byte, else everything buffered is
    dropped (ERR_TIMEOUT)."""

    def __init__(self, timeout_ms=FRAME_TIMEOUT_MS):
        self._buf = bytearray(MAX_FRAME)
        self._pos = 0
        self._t0 = 0
        self._timeout = timeout_ms

    @property
    def pending(self):
        """Bytes of an unfinished frame held in the buffer."""
        return self._pos

    def reset(self):
        self._pos = 0

    def feed(self, data, now):
        out = None
        if self._pos and _ticks_diff(now, self._t0) > self._timeout:
            out = [ERR_TIMEOUT]  # everything buffered is stale: drop it all
            self._pos = 0
        n = len(data)
        i = 0
        buf = self._buf
        while i < n:
            pos = self._pos
            if pos == 0:
                i = _find(data, i, n, START)
                if i < 0:
                    break
                self._t0 = now
            need = self._need() - pos
            k = n - i
            if k > need:
                k = need
            _copy(buf, pos, data, i, k)
            self._pos = pos + k
            i += k
            out = self._drain(out, now)
        return _EMPTY if out is None else out

    def _need(self):
        buf = self._buf
        if self._pos < HEADER:
            return HEADER
        return frame_size((buf[2] << 8) | buf[3], buf[4] & FLAG_MAC)

    def _header_error(self):
        buf = self._buf
        if buf[1] != VERSION:
            return ERR_BAD_VERSION
        if (buf[2] << 8) | buf[3] > MAX_PAYLOAD:
            return ERR_TOO_LONG
        flags = buf[4]
        if flags & ~_FLAGS_KNOWN or (flags & FLAG_ENC and not flags & FLAG_MAC):
            return ERR_MALFORMED
        return 0

    def _drain(self, out, now):
        # Decide about everything the buffer holds; stop when it holds only part of a frame.
        buf = self._buf
        while self._pos >= HEADER:
            err = self._header_error()
            if not err:
                total = self._need()
                if self._pos < total:
                    break
                end = total - CRC_LEN
                if crc16(buf, 0, end) == (buf[end] << 8) | buf[end + 1]:
                    flags = buf[4]
                    n = (buf[2] << 8) | buf[3]
                    mac = bytes(buf[HEADER + n:end]) if flags & FLAG_MAC else None
                    frame = Frame(buf[5], flags, (buf[6] << 16) | (buf[7] << 8) | buf[8],
                                  bytes(buf[HEADER:HEADER + n]), mac)
                    out = _append(out, frame)
                    self._shift_to_start(total)
                    self._t0 = now
                    continue
                err = ERR_BAD_CRC
            out = _append(out, err)
            self._shift_to_start(1)
            self._t0 = now
        return out

    def _shift_to_start(self, skip):
        # Drop `skip` bytes and everything up to the next start byte; keep the rest at the front.
        pos = self._pos
        k = _find(self._buf, skip, pos, START) if skip < pos else -1
        if k < 0:
            self._pos = 0
            return
        _copy(self._buf, 0, self._buf, k, pos - k)
        self._pos = pos - k


def _append(out, item):
    if out is None:
        return [item]
    out.append(item)
    return out
