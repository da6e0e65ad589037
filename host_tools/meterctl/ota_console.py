"""`meterctl ota push` against a production meter: the signed bundle goes over the console protocol as the
admin role (firmware/umeter/ota/CONSOLE_OTA.md) into the same streaming installer the raw-REPL path feeds.

One session: ``ota_begin`` (bundle length + its 14-byte header), then ``ota_data`` frames of at most
CHUNK bytes, each starting where the device's previous answer said; the frame that completes the head
is answered after the device verified it, with where the inactive slot's upload stands (0, or where an
interrupted push stopped), and the host seeks there. ``ota_finish`` switches slots; the meter then
reboots into the new app's trial boot. A lost connection (no answer, a port error, a session the device
no longer knows) logs in again and resumes; a refusal by the device is final.
"""
import json
import struct
import time

from meterctl.cli import CliError
from meterctl.console_client import ConsoleError, ProtocolError
from meterctl.ota_push import RETRIES, RETRY_PAUSE_S, Refused, split
from umeter.console import framing

VERSION = 1
HEADER_LEN = 14
CHUNK = framing.MAX_PAYLOAD - 4   # offset u32 || bytes
SLOW_TIMEOUT_S = 30.0             # the head frame verifies signatures; finish re-hashes the slot
READ_TIMEOUT_S = 0.002
# The session is gone (the meter rebooted, or line noise ate a frame): log in again and resume.
_RETRY_CODES = (framing.ERR_NOT_AUTHENTICATED, framing.ERR_BAD_MAC, framing.ERR_TIMEOUT, framing.ERR_BAD_CRC)


def _u32(answer, what):
    if len(answer) != 4:
        raise CliError("the device answered %d bytes to %s, expected 4" % (len(answer), what))
    return struct.unpack(">I", answer)[0]


def _call(console, command, payload):
    try:
        return console.call(command, payload)
    except ConsoleError as e:
        if e.code == framing.ERR_FORBIDDEN:
            why = ("ota push needs the admin role (the device refused %s to this role): give the admin key "
                   "(--role admin, --role-key FILE or --key-dir DIR)" % command)
            raise CliError(why) from None
        if e.code == framing.ERR_BAD_PAYLOAD:
            raise Refused("the device refused the bundle: %s" % e.text) from None
        if e.code == framing.ERR_UNSUPPORTED:
            raise CliError("this meter's firmware has no OTA over the console (%s unsupported)" % command) \
                from None
        raise


def send(console, data, progress=None, hook=None, starts=None):
    """One session on a logged-in console (anything with call(name, payload) and rebooting()): the
    device's ota_finish answer (dict). starts: gets the payload offset the device resumed at. hook(console,
    payload position) runs after each acknowledged payload frame (tests break the line there)."""
    head, payload = split(data)
    hl = len(head)
    progress = progress or (lambda pos, total: None)
    ans = _call(console, "ota_begin", struct.pack(">BI", VERSION, len(data)) + data[:HEADER_LEN])
    if len(ans) != 7 or ans[0] != VERSION:
        raise CliError("the device answered %r to ota_begin (console OTA version %d expected)"
                       % (ans[:8], VERSION))
    _, at, limit = struct.unpack(">BIH", ans)
    chunk = min(CHUNK, limit)
    if at != HEADER_LEN or chunk < 1:
        raise CliError("the device asked for byte %d / chunks of %d after ota_begin" % (at, limit))
    while at < len(data):
        end = min(at + chunk, len(data))
        if at < hl:
            end = min(end, hl)   # the head's last frame ends at the head's end
        nxt = _u32(_call(console, "ota_data", struct.pack(">I", at) + data[at:end]), "ota_data")
        if end == hl:
            if not hl <= nxt <= len(data):
                raise CliError("the device resumes at bundle byte %d, outside the payload" % nxt)
            if starts is not None:
                starts.append(nxt - hl)
        elif nxt != end:
            raise CliError("the device is at bundle byte %d, expected %d" % (nxt, end))
        at = nxt
        if at >= hl:
            progress(at - hl, len(payload))
            if hook is not None and end > hl:
                hook(console, at - hl)
    if not payload:
        progress(0, 0)
    try:
        result = json.loads(_call(console, "ota_finish", b""))
    except ValueError:
        raise CliError("the device's answer to ota_finish is not JSON") from None
    console.rebooting()   # the meter reboots into the trial boot: nobody answers a logout
    return result


def _retryable(e):
    if isinstance(e, ConsoleError):
        return e.code in _RETRY_CODES
    return isinstance(e, (ProtocolError, OSError))   # OSError: pyserial's SerialException (cable pulled)


def push(open_console, data, progress=None, hook=None, retries=RETRIES, log=None, pause=RETRY_PAUSE_S):
    """Install `data` (bundle bytes) through consoles made by open_console() (a context manager logged in
    as admin, e.g. production.Console). Returns (ota_finish answer, sessions, payload offset each session
    started from). A connection lost once the device has answered ota_begin reconnects and resumes."""
    log = log or (lambda line: None)
    starts = []
    began = False
    for attempt in range(retries + 1):
        try:
            with open_console() as console:
                began = True
                result = send(console, data, progress, hook, starts)
            return result, attempt + 1, starts
        except (ProtocolError, ConsoleError, OSError) as e:
            if not began or not _retryable(e):
                raise
            if attempt == retries:
                raise CliError("gave up after %d broken sessions: %s" % (retries + 1, e)) from None
            log("connection lost (%s); logging in again to resume" % e)
            time.sleep(pause)
    raise AssertionError("unreachable")


def open_production(port, key, role="admin", timeout=SLOW_TIMEOUT_S):
    """open_console for push(): a production.Console on `port` logged in as `role`."""
    from meterctl import production as prod

    def make():
        # One answer per frame: a shorter serial read timeout than the console's 20 ms doubles the push's
        # throughput (the client drains and then awaits with a read on every exchange).
        return prod.Console(port, key, role, timeout=max(timeout, SLOW_TIMEOUT_S),
                            read_timeout=READ_TIMEOUT_S)
    return make
