# Shared by the console tests (MicroPython and CPython): an in-memory blob backend, a fake millisecond
# clock, a minimal host built from the firmware's own framing and session modules, and the fuzz driver
# that the MicroPython fuzz test feeds from CPython. No test_ functions here.
import hashlib
import os
import time

from umeter.console import framing, roles
from umeter.console.console import Console
from umeter.console.session import SessionKeys, client_proof, DIR_TO_DEVICE, DIR_TO_HOST, equal

PUBLIC_LINE = b"umeter|sw 1.2.3|SN 0042|production"
ROLE_KEYS = {roles.READER: bytes(range(1, 33)), roles.OPERATOR: bytes(range(33, 65)),
             roles.ADMIN: bytes(range(65, 97))}


class MemBackend:
    """A keystore blob backend in RAM; `saves` lists (name, data) in write order."""

    def __init__(self):
        self.blobs = {}
        self.saves = []

    def load(self, name):
        return self.blobs.get(name)

    def save(self, name, data):
        assert len(name) <= 15
        self.blobs[name] = bytes(data)
        self.saves.append((name, bytes(data)))

    def erase(self, name):
        self.blobs.pop(name, None)


class Clock:
    def __init__(self, t=1000):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, ms):
        self.t += ms


def fake_handlers(calls):
    """A handler per app command: records (name, payload), answers b"ran <name>:" + payload."""
    handlers = {}
    for name in roles.app_commands():
        def run(payload, name=name):
            calls.append((name, bytes(payload)))
            return b"ran " + name.encode() + b":" + bytes(payload)
        handlers[name] = run
    return handlers


class SeededRandom:
    """A stand-in for os.urandom that both interpreters reproduce: SHA-256 of a counter."""

    def __init__(self, seed=b"fuzz"):
        self.seed = seed
        self.n = 0

    def __call__(self, size):
        out = b""
        while len(out) < size:
            self.n += 1
            out += hashlib.sha256(self.seed + str(self.n).encode()).digest()
        return out[:size]


def make_console(backend=None, clock=None, events=None, calls=None, handlers=None, keys=True, urandom=None):
    backend = MemBackend() if backend is None else backend
    clock = Clock() if clock is None else clock
    events = [] if events is None else events
    calls = [] if calls is None else calls

    def on_event(code, role, detail):
        events.append((code, role, detail))

    c = Console(backend, fake_handlers(calls) if handlers is None else handlers, PUBLIC_LINE,
                on_event=on_event, ticks_ms=clock, urandom=urandom)
    if keys:
        for role, key in ROLE_KEYS.items():
            if c.rolekeys.key(role) is None:
                c.rolekeys.set_key(role, key)
    del events[:]
    return c


def decode_all(data):
    """Every frame in `data` (the console's output), asserting it holds frames and nothing else."""
    d = framing.Decoder()
    out = d.feed(data, 0)
    for r in out:
        assert not isinstance(r, int), "console sent a malformed frame (%d)" % r
    assert d.pending == 0, "console sent a partial frame"
    return list(out)


def error_of(frame):
    """The error code of an answer, 0 for a normal answer."""
    if not frame.flags & framing.FLAG_ERROR:
        return 0
    return framing.parse_error(frame.payload)[0]


class Host:
    """A minimal, deliberately permissive client: it can send anything, including bad frames."""

    def __init__(self, console):
        self.console = console
        self.seq = 0
        self.keys = None

    def send(self, data):
        return decode_all(self.console.feed(data))

    def frame(self, command, payload=b"", flags=0, seq=None, keys=None, encrypt=False):
        if seq is None:
            self.seq += 1
            seq = self.seq
        keys = self.keys if keys is None else keys
        if keys is False:
            keys = None
        if keys is None:
            return framing.encode(command, seq, payload, flags)
        if encrypt:
            flags |= framing.FLAG_ENC
            payload = keys.crypt(DIR_TO_DEVICE, seq, payload)
        tag = keys.tag(DIR_TO_DEVICE, flags | framing.FLAG_MAC, command, seq, payload)
        return framing.encode(command, seq, payload, flags, tag)

    def request(self, command, payload=b"", **kw):
        """Send one frame, return its one answer (asserting exactly one came)."""
        answers = self.send(self.frame(command, payload, **kw))
        assert len(answers) == 1, "expected one answer, got %r" % answers
        a = answers[0]
        if self.keys is not None and a.mac is not None:
            assert equal(a.mac, self.keys.tag(DIR_TO_HOST, a.flags, a.command, a.seq, a.payload))
        return a

    def login(self, role, key=None):
        """Log in; returns the auth_finish answer (self.keys set only on success)."""
        key = ROLE_KEYS[role] if key is None else key
        self.keys = None
        a = self.request(roles.AUTH_BEGIN, bytes((role,)))
        if error_of(a):
            return a
        sid, dnonce = a.payload[:8], a.payload[8:]
        cnonce = os.urandom(32)
        keys = SessionKeys(key, role, sid, dnonce, cnonce)
        a = self.request(roles.AUTH_FINISH, cnonce + client_proof(key, role, dnonce, cnonce))
        if not error_of(a):
            assert a.mac is not None and equal(a.mac, keys.tag(DIR_TO_HOST, a.flags, a.command, a.seq,
                                                               a.payload))
            self.keys = keys
        return a


# --- fuzz (run on the unix port with frames generated by CPython) --------------------------------------
def check_public_only(out):
    """Unauthenticated answers: error frames, the public line, or an authentication challenge."""
    for f in decode_all(out):
        assert f.flags & framing.FLAG_RESPONSE
        if f.flags & framing.FLAG_ERROR:
            assert f.payload and f.payload[0] in framing.ERROR_NAMES, f
            continue
        if f.command == roles.HELLO:
            assert f.payload == PUBLIC_LINE
        elif f.command == roles.AUTH_BEGIN:
            assert len(f.payload) == 40
        else:
            raise AssertionError("answer beyond the public line without authentication: %r" % f)


def _now_us():
    try:
        return time.ticks_us()
    except AttributeError:  # CPython
        return int(time.perf_counter() * 1e6)


def _feed_checked(c, chunk, stats):
    """One feed() call with the bounds every call must keep; returns its output."""
    d = c._decoder
    starts = chunk.count(b"\xa5") + bytes(d._buf[:d.pending]).count(b"\xa5")
    t0 = _now_us()
    out = c.feed(chunk)
    us = _now_us() - t0
    if us > stats["max_us"]:
        stats["max_us"] = us
    # at most one answer per start byte fed or buffered (error frames are 16 bytes; a hello answer 45;
    # a timed-out partial frame one more)
    assert len(out) <= 64 * (starts + 1), (len(chunk), len(out))
    assert c._decoder.pending <= framing.MAX_FRAME
    stats["answered"] += len(out)
    stats["chunks"] += 1
    return out


def new_stats():
    return {"max_us": 0, "answered": 0, "chunks": 0}


def fuzz_public(chunks, clock_step=7):
    """Feed every chunk to one console whose keys the stream does not know: only the public part may
    answer, no handler may run. Returns the stats (max_us: longest feed() call)."""
    clock = Clock()
    calls = []
    c = make_console(clock=clock, calls=calls)
    stats = new_stats()
    for chunk in chunks:
        clock.advance(clock_step)
        check_public_only(_feed_checked(c, chunk, stats))
        assert c.role == "none"
    clock.advance(framing.FRAME_TIMEOUT_MS + 1)
    check_public_only(c.poll())
    assert c._decoder.pending == 0
    assert not calls, calls
    return stats


def fuzz_session(chunks, seed, clock_step=3):
    """Feed a stream that logs in as reader (the console's nonces from SeededRandom(seed)), then sends
    session frames, some of them mutated. Returns (payloads the handlers saw, stats)."""
    calls = []
    c = make_console(clock=Clock(), calls=calls, urandom=SeededRandom(seed))
    stats = new_stats()
    for chunk in chunks:
        c._ticks.advance(clock_step)
        for f in decode_all(_feed_checked(c, chunk, stats)):
            assert f.flags & framing.FLAG_RESPONSE
    return [p for _, p in calls], stats
