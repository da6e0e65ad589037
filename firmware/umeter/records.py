"""The application's record payloads (before sealing): one type byte, then the body. RECORDS.md.

Shared by the device (app.py) and the host (meterctl export), so it is pure logic."""
import struct

from micropython import const

REC_PROFILE = const(1)     # body: a load-profile record (metering/PROFILE.md)
REC_CHECKPOINT = const(2)  # body: register checkpoint, CHECKPOINT_FORMAT
REC_EVENT = const(3)       # body: EVENT_FORMAT + UTF-8 text

CHECKPOINT_VERSION = const(1)
CHECKPOINT_FORMAT = "<BBQQQQQ"  # version, frac bits, engine time (samples), 4 registers in FU
EVENT_FORMAT = "<BI"            # event code, argument
MAX_EVENT_TEXT = const(160)

EV_BOOT = const(1)         # arg: boot count; text: software id
EV_TAMPER = const(2)       # arg: high-water mark seq; text: the verdict's reason
EV_POWER_FAIL = const(3)   # arg: engine time in s
EV_FAULT = const(4)        # arg: faults so far; text: exception type and message
EV_KEY_EPOCH = const(5)    # arg: new key epoch
EV_STORE = const(6)        # arg: 0; text: what the store reported (e.g. a retired sector)

EVENT_NAMES = {EV_BOOT: "boot", EV_TAMPER: "tamper", EV_POWER_FAIL: "power_fail", EV_FAULT: "fault",
               EV_KEY_EPOCH: "key_epoch", EV_STORE: "store"}


def profile(body):
    return bytes((REC_PROFILE,)) + body


def checkpoint(snapshot):
    """snapshot: Engine.snapshot() = [version, frac_bits, t, fu x 4]."""
    if snapshot[0] != CHECKPOINT_VERSION:
        raise ValueError("unknown snapshot version")
    return bytes((REC_CHECKPOINT,)) + struct.pack(CHECKPOINT_FORMAT, *snapshot)


def event(code, arg=0, text=""):
    data = text.encode() if isinstance(text, str) else bytes(text)
    return bytes((REC_EVENT,)) + struct.pack(EVENT_FORMAT, code, arg & 0xFFFFFFFF) + data[:MAX_EVENT_TEXT]


def decode(payload):
    """(type, fields): fields is a dict for checkpoints and events, the raw body for profiles."""
    if not payload:
        raise ValueError("empty record")
    typ = payload[0]
    body = bytes(payload[1:])
    if typ == REC_PROFILE:
        return typ, body
    if typ == REC_CHECKPOINT:
        if len(body) != struct.calcsize(CHECKPOINT_FORMAT):
            raise ValueError("bad checkpoint record length")
        return typ, {"snapshot": list(struct.unpack(CHECKPOINT_FORMAT, body))}
    if typ == REC_EVENT:
        n = struct.calcsize(EVENT_FORMAT)
        if len(body) < n:
            raise ValueError("bad event record length")
        code, arg = struct.unpack(EVENT_FORMAT, body[:n])
        return typ, {"event": EVENT_NAMES.get(code, "unknown_%d" % code), "code": code, "arg": arg,
                     "text": body[n:].decode()}
    raise ValueError("unknown record type %d" % typ)
