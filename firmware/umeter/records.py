"""The application's record payloads (before sealing): one type byte, then the body. RECORDS.md.

Shared by the device (app.py) and the host (meterctl export), so it is pure logic."""
import struct

from micropython import const

from umeter.metering.packing import pack

REC_PROFILE = const(1)     # body: a load-profile record (metering/PROFILE.md)
REC_CHECKPOINT = const(2)  # body: register checkpoint, CHECKPOINT_FORMAT
REC_EVENT = const(3)       # body: EVENT_FORMAT + UTF-8 text
REC_RETENTION = const(4)   # body: RETENTION_FORMAT + the oldest kept record's tag (ring retention)

SNAPSHOT_VERSION = const(1)  # Engine.snapshot()'s list layout (metering/PROFILE.md)
CHECKPOINT_VERSION = const(2)
# version, frac bits, engine time (samples), then per register: whole mWh (mvarh), remainder in FU
CHECKPOINT_FORMAT = "<BBQQIQIQIQI"
CHECKPOINT_FORMAT_V1 = "<BBQQQQQ"  # version 1: the 4 registers as u64 FU (full at 2**40 mWh); read only
EVENT_FORMAT = "<BI"            # event code, argument
RETENTION_VERSION = const(1)
RETENTION_FORMAT = "<BQQQB"     # version, first dropped seq, last dropped seq, oldest kept seq, tag length
MAX_TAG = const(64)
MAX_EVENT_TEXT = const(160)

EV_BOOT = const(1)         # arg: boot count; text: software id
EV_TAMPER = const(2)       # arg: high-water mark seq; text: the verdict's reason
EV_POWER_FAIL = const(3)   # arg: engine time in s
EV_FAULT = const(4)        # arg: faults so far; text: exception type and message
EV_KEY_EPOCH = const(5)    # arg: new key epoch
EV_STORE = const(6)        # arg: 0; text: what the store reported (e.g. a retired sector)
EV_OTA = const(7)          # arg: the update event's number; text: "<name> <slot> <arg> <text>" (ota/SLOTS.md)
EV_CONSOLE = const(8)      # arg: console event code (console/roles.py); text: "<role> <detail>"

EVENT_NAMES = {EV_BOOT: "boot", EV_TAMPER: "tamper", EV_POWER_FAIL: "power_fail", EV_FAULT: "fault",
               EV_KEY_EPOCH: "key_epoch", EV_STORE: "store", EV_OTA: "ota",
               EV_CONSOLE: "console"}


FIELDS_ALL = const(7)  # metering/profile.py: every profile field (the default; stored as version 2)


def profile(body, fields=FIELDS_ALL):
    """A load-profile record (Engine.pop_record()) as stored: with only the optional fields in the
    `fields` mask (metering/profile.py FIELD_*: minimisation, RECORDS.md 2.1); the energy deltas always."""
    if fields != FIELDS_ALL:
        from umeter.metering.profile import minimise

        body = minimise(body, fields)
    return bytes((REC_PROFILE,)) + body


def checkpoint(snapshot):
    """snapshot: Engine.snapshot() = [1, frac_bits, t, fu x 4] (registers in FU = mWh / 2**frac_bits,
    unbounded ints). ValueError for anything the record cannot hold exactly (RECORDS.md 3)."""
    if len(snapshot) != 7 or snapshot[0] != SNAPSHOT_VERSION:
        raise ValueError("not a version %d register snapshot" % SNAPSHOT_VERSION)
    frac = snapshot[1]
    if not isinstance(frac, int) or not 0 <= frac <= 32:
        raise ValueError("frac_bits must be 0..32")
    fields = [CHECKPOINT_VERSION, frac, snapshot[2]]
    mask = (1 << frac) - 1
    for fu in snapshot[3:]:
        if not isinstance(fu, int) or fu < 0:
            raise ValueError("registers must be non-negative ints")
        fields.append(fu >> frac)  # pack() refuses >= 2**64 mWh
        fields.append(fu & mask)
    return bytes((REC_CHECKPOINT,)) + pack(CHECKPOINT_FORMAT, *fields)


def _snapshot(body):
    """A checkpoint body (version 2 or 1) -> the Engine.snapshot() list it holds."""
    if body and body[0] == CHECKPOINT_VERSION and len(body) == struct.calcsize(CHECKPOINT_FORMAT):
        f = struct.unpack(CHECKPOINT_FORMAT, body)
        frac = f[1]
        if frac > 32:
            raise ValueError("bad checkpoint frac_bits %d" % frac)
        snap = [SNAPSHOT_VERSION, frac, f[2]]
        for k in range(3, 11, 2):
            if f[k + 1] >> frac:
                raise ValueError("checkpoint remainder not below 2**frac_bits")
            snap.append((f[k] << frac) + f[k + 1])
        return snap
    if body and body[0] == 1 and len(body) == struct.calcsize(CHECKPOINT_FORMAT_V1):
        return list(struct.unpack(CHECKPOINT_FORMAT_V1, body))
    raise ValueError("bad checkpoint record (version %d, %d bytes)" % (body[0] if body else -1, len(body)))


def event(code, arg=0, text=""):
    data = text.encode() if isinstance(text, str) else bytes(text)
    return bytes((REC_EVENT,)) + pack(EVENT_FORMAT, code, arg & 0xFFFFFFFF) + data[:MAX_EVENT_TEXT]


def retention(first_dropped, last_dropped, oldest_kept, oldest_kept_tag):
    """Ring retention: the records first_dropped..last_dropped are dropped on purpose; after the drop the
    oldest record is `oldest_kept` with seal tag `oldest_kept_tag` (b"" when none is left)."""
    tag = bytes(oldest_kept_tag)
    if len(tag) > MAX_TAG:
        raise ValueError("retention: tag longer than %d bytes" % MAX_TAG)
    if not 0 < first_dropped <= last_dropped or (oldest_kept and oldest_kept <= last_dropped):
        raise ValueError("retention: seqs out of order")
    return bytes((REC_RETENTION,)) + pack(RETENTION_FORMAT, RETENTION_VERSION, first_dropped, last_dropped,
                                          oldest_kept, len(tag)) + tag


def _retention(body):
    n = struct.calcsize(RETENTION_FORMAT)
    if len(body) < n or body[0] != RETENTION_VERSION:
        raise ValueError("unknown retention record version")
    _, first, last, kept, taglen = struct.unpack(RETENTION_FORMAT, body[:n])
    if len(body) != n + taglen:
        raise ValueError("bad retention record length")
    return {"first_dropped": first, "last_dropped": last, "oldest_kept": kept, "oldest_kept_tag": body[n:]}


def decode(payload):
    """(type, fields): fields is a dict for checkpoints and events, the raw body for profiles."""
    if not payload:
        raise ValueError("empty record")
    typ = payload[0]
    body = bytes(payload[1:])
    if typ == REC_PROFILE:
        return typ, body
    if typ == REC_CHECKPOINT:
        return typ, {"snapshot": _snapshot(body), "version": body[0]}
    if typ == REC_EVENT:
        n = struct.calcsize(EVENT_FORMAT)
        if len(body) < n:
            raise ValueError("bad event record length")
        code, arg = struct.unpack(EVENT_FORMAT, body[:n])
        return typ, {"event": EVENT_NAMES.get(code, "unknown_%d" % code), "code": code, "arg": arg,
                     "text": body[n:].decode()}
    if typ == REC_RETENTION:
        return typ, _retention(body)
    raise ValueError("unknown record type %d" % typ)
