"""`meterctl ota push`: deliver a signed bundle over the raw REPL of a development board (or the virtual
board's pty) into the device's streaming installer (firmware/umeter/ota/install.py, SLOTS.md section 5).

One session: the head (header + manifest + signature block) is sent in base64 pieces and handed to
``Installer.begin``, which verifies it and answers the payload offset to continue from (0, or where an
earlier, interrupted push stopped: the device keeps the partial slot). Then the payload goes in chunks
of CHUNK bytes, each acknowledged with the device's position, then ``finish()``. A lost connection (cable,
reset, power cut) reconnects and starts a new session, which resumes; a refusal by the device is final.
"""
import base64
import time

from meterctl.cli import CliError
from meterctl.remote import Remote, RemoteError

CHUNK = 1536            # raw bytes per command (2 KB of base64), as deploy: small for a 100 KB heap
HEAD_PIECE = 3072
RETRIES = 8
RETRY_PAUSE_S = 0.5

_SETUP = ("import binascii as _uob\n"
          "from umeter.ota.install import Installer as _UOI\n"
          "_uoi = _UOI()\n"
          "_uoh = bytearray()\n")
_BEGIN = "print(_uoi.begin(_uoh))\n_uoh = None\n"
_WRITE = "print(_uoi.write(_uob.a2b_base64(%r)))\n"
_FINISH = "print(_uoi.finish())\ndel _uoi, _uoh, _UOI, _uob\n"


class Refused(CliError):
    """The device refused the bundle (its reason is the message)."""


def split(data):
    """(head, payload) of a bundle's bytes, by its header (the device checks everything else)."""
    if len(data) < 14 or data[:8] != b"UMTRBNDL":
        raise CliError("not an umeter bundle (bad magic)")
    head_len = 14 + int.from_bytes(data[10:12], "big") + int.from_bytes(data[12:14], "big")
    if len(data) < head_len:
        raise CliError("bundle shorter than its header says")
    return data[:head_len], data[head_len:]


def _b64(raw):
    return base64.b64encode(raw).decode()


def _answer_int(text, what):
    try:
        return int(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RemoteError("the device answered %r to %s" % (text.strip()[:60], what)) from None


def _device_error(e):
    """A device-side refusal (final), or None for a lost connection (retry)."""
    msg = str(e)
    if msg.startswith("on the device: "):
        text = msg[len("on the device: "):]
        if text.startswith("Refused: "):
            return Refused("the device refused the bundle: " + text[len("Refused: "):])
        if "ImportError" in text and "umeter" in text:
            return CliError("no umeter OTA installer on the device (deploy the firmware first)")
        return CliError("the device failed: " + text)
    return None


def _session(dev, head, payload, progress, hook, starts):
    dev.exec(_SETUP)
    for i in range(0, len(head), HEAD_PIECE):
        dev.exec("_uoh.extend(_uob.a2b_base64(%r))\n" % _b64(head[i:i + HEAD_PIECE]))
    pos = _answer_int(dev.exec(_BEGIN, timeout=max(dev.timeout, 30)), "begin")
    starts.append(pos)
    progress(pos, len(payload))
    while pos < len(payload):
        piece = payload[pos:pos + CHUNK]
        got = _answer_int(dev.exec(_WRITE % _b64(piece)), "write")
        if got != pos + len(piece):
            raise CliError("the device is at payload byte %d, expected %d" % (got, pos + len(piece)))
        pos = got
        progress(pos, len(payload))
        if hook is not None:
            hook(dev, pos)
    return dev.exec(_FINISH, timeout=max(dev.timeout, 30)).strip().splitlines()[-1]


def push(port, data, timeout=5.0, progress=None, hook=None, retries=RETRIES, log=None):
    """Install `data` (bundle bytes) on the device at `port`. Returns (software id, sessions, the payload
    offset each session started from). hook(dev, pos) runs after each acknowledged chunk (tests break
    the connection there)."""
    head, payload = split(data)
    progress = progress or (lambda pos, total: None)
    log = log or (lambda line: None)
    dev = Remote(port, timeout=timeout)
    starts = []
    try:
        for attempt in range(retries + 1):
            try:
                if not dev.connected:
                    dev.open()
                sid = _session(dev, head, payload, progress, hook, starts)
                return sid, attempt + 1, starts
            except RemoteError as e:
                final = _device_error(e)
                if final is not None:
                    raise final from None
                if attempt == retries:
                    raise RemoteError("gave up after %d broken sessions: %s" % (retries + 1, e)) from None
                log("connection lost (%s); reconnecting to resume" % e)
                dev.close()
                time.sleep(RETRY_PAUSE_S)
    finally:
        dev.close()
    raise AssertionError("unreachable")


def progress_bar(stream, width=30):
    """A progress callback drawing one updating line on `stream` (stderr)."""
    start = [None]

    def draw(pos, total):
        now = time.monotonic()
        if start[0] is None:
            start[0] = (now, pos)
        frac = pos / total if total else 1.0
        done = int(frac * width)
        rate = (pos - start[0][1]) / (now - start[0][0]) / 1024 if now > start[0][0] else 0.0
        stream.write("\rota push [%s%s] %3d%% %d/%d bytes %.1f KB/s" % ("#" * done, "." * (width - done),
                                                                     int(frac * 100), pos, total, rate))
        if pos >= total:
            stream.write("\n")
        stream.flush()

    return draw
