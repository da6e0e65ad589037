# The production-mode console on the unix port (both lanes): frames, authentication per role, the role
# matrix, rejected frames (wrong keys, replays, other sessions, tampered MACs, truncation), back-off
# across a reboot, and bounded memory per frame.
import gc
import os

import micropython
from mptest import raises
from mpt_console_kit import (MemBackend, Clock, Host, make_console, error_of, decode_all, ROLE_KEYS,
                             PUBLIC_LINE)
from umeter.console import framing, roles
from umeter.console.framing import (ERR_NOT_AUTHENTICATED, ERR_FORBIDDEN, ERR_BAD_MAC, ERR_REPLAY,
                                    ERR_AUTH_FAILED, ERR_BACKOFF, ERR_BAD_CRC, ERR_TOO_LONG, ERR_TIMEOUT,
                                    ERR_UNKNOWN_COMMAND, ERR_NEEDS_ENCRYPTION, ERR_INTERNAL, ERR_NO_KEY,
                                    ERR_NO_CHALLENGE, ERR_BAD_VERSION, ERR_MALFORMED, ERR_BUSY)
from umeter.console.rolekeys import delay_ms, MAX_DELAY_MS
from umeter.console.console import CommandError, SESSION_IDLE_MS

# Written out here, not taken from roles.COMMANDS: the matrix the issue asks for.
READER_CMDS = ["status", "registers", "software_id", "export", "event_log", "logout"]
OPERATOR_CMDS = READER_CMDS + ["set_time", "calibration", "set_interval", "set_retention",
                               "set_power_fail", "set_checkpoint", "reboot"]
ADMIN_CMDS = OPERATOR_CMDS + ["ota_begin", "ota_data", "ota_finish", "rotate_key", "set_role_key",
                              "set_mode", "factory_reset", "provision"]
ALLOWED = {roles.READER: READER_CMDS, roles.OPERATOR: OPERATOR_CMDS, roles.ADMIN: ADMIN_CMDS}
SECRET_CMDS = ("rotate_key", "set_role_key", "provision")


def test_frame_round_trips_and_resync():
    assert framing.crc16(b"123456789", 0, 9) == 0x29B1  # CRC-16/CCITT-FALSE check value
    for n in (0, 1, 2, 100, framing.MAX_PAYLOAD):
        payload = bytes((i * 7 + n) & 0xFF for i in range(n))
        for mac in (None, bytes(range(16))):
            f = framing.encode(0x10, 0xABCDEF if n else 0, payload, 0, mac)
            assert len(f) == framing.frame_size(n, mac is not None)
            for step in (1, 3, 64, len(f)):  # any chunking gives the same frame
                d = framing.Decoder()
                got = []
                for i in range(0, len(f), step):
                    got.extend(d.feed(f[i:i + step], 0))
                assert len(got) == 1 and got[0].payload == payload and got[0].mac == mac
                assert got[0].seq == (0xABCDEF if n else 0) and got[0].command == 0x10
    with raises(ValueError):
        framing.encode(1, 0, bytes(framing.MAX_PAYLOAD + 1))
    with raises(ValueError):
        framing.encode(1, framing.MAX_SEQ + 1)
    good = framing.encode(0x11, 9, b"abc")
    d = framing.Decoder()
    # garbage with stray start bytes, a bad CRC, an oversize length, a wrong version, then a good frame
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 1
    too_long = bytes((0xA5, 1, 0x04, 0x01, 0, 1, 0, 0, 1))
    out = list(d.feed(b"\x00\x13\xa5\x02" + bytes(bad_crc) + too_long + good, 0))
    frames = [r for r in out if not isinstance(r, int)]
    errors = [r for r in out if isinstance(r, int)]
    assert ERR_BAD_CRC in errors and ERR_TOO_LONG in errors and ERR_BAD_VERSION in errors
    assert len(frames) == 1 and frames[0].payload == b"abc" and frames[0].seq == 9
    # a good frame hidden inside a frame whose length swallowed it is found again after the CRC fails
    swallow = bytes((0xA5, 1, 0, 40, 0, 1, 0, 0, 1))
    out = list(d.feed(swallow + good + bytes(40), 0))
    assert ERR_BAD_CRC in out and [r.payload for r in out if not isinstance(r, int)] == [b"abc"]
    # reserved flag bits, or encryption without a MAC: malformed
    assert list(d.feed(bytes((0xA5, 1, 0, 0, 0x10, 1, 0, 0, 1)), 0)) == [ERR_MALFORMED]
    assert list(d.feed(bytes((0xA5, 1, 0, 0, 0x08, 1, 0, 0, 1)), 0)) == [ERR_MALFORMED]
    # a frame must complete within FRAME_TIMEOUT_MS of its start byte
    assert list(d.feed(good[:5], 100)) == [] and d.pending == 5
    assert list(d.feed(b"", 100 + framing.FRAME_TIMEOUT_MS)) == []
    assert list(d.feed(b"", 101 + framing.FRAME_TIMEOUT_MS)) == [ERR_TIMEOUT] and d.pending == 0
    assert [r.payload for r in d.feed(good, 5000)] == [b"abc"]


def test_public_line_only_before_authentication():
    c = make_console()
    h = Host(c)
    a = h.request(roles.HELLO)
    assert a.payload == PUBLIC_LINE and not error_of(a) and a.mac is None
    for code in range(256):
        if code in (roles.HELLO, roles.AUTH_BEGIN, roles.AUTH_FINISH):
            continue
        a = h.request(code, b"x")
        assert error_of(a) == ERR_NOT_AUTHENTICATED, (code, a)
        assert a.command == code and a.seq == h.seq and len(a.payload) == 5  # code + arg, no text
    assert h.request(roles.AUTH_FINISH, bytes(64)).payload[0] == ERR_NO_CHALLENGE
    # no role key installed: that role cannot log in at all (secure by default)
    c2 = make_console(keys=False)
    assert error_of(Host(c2).login(roles.ADMIN)) == ERR_NO_KEY


def test_login_per_role_and_events():
    events = []
    c = make_console(events=events)
    for role in roles.ROLES:
        h = Host(c)
        a = h.login(role)
        assert not error_of(a), a
        assert c.role == roles.ROLE_NAMES[role]
        assert events[-1] == (roles.EV_AUTH_OK, roles.ROLE_NAMES[role], "")
        assert h.request(0x12).payload == b"ran software_id:"
    # a second login ends the first session: its frames no longer pass
    h1 = Host(c)
    h1.login(roles.READER)
    h2 = Host(c)
    h2.login(roles.OPERATOR)
    assert error_of(h1.request(0x10)) == ERR_BAD_MAC
    assert not error_of(h2.request(0x10))


def _expect(h, role, name, calls):
    code = roles.CODES[name]
    payload = b"\x01" + bytes(range(32)) if name == "set_role_key" else b"p-" + name.encode()
    secret = name in SECRET_CMDS
    del calls[:]
    a = h.request(code, payload, encrypt=secret)
    if role == roles.PUBLIC:
        assert error_of(a) == ERR_NOT_AUTHENTICATED, (name, a)
        assert not calls
        return
    if name not in ALLOWED[role]:
        assert error_of(a) == ERR_FORBIDDEN, (roles.ROLE_NAMES[role], name, a)
        assert not calls and a.mac is not None
        return
    assert not error_of(a), (roles.ROLE_NAMES[role], name, framing.parse_error(a.payload))
    if name == "logout":
        assert a.payload == b""
        assert error_of(h.request(0x10)) == ERR_NOT_AUTHENTICATED
        h.login(role)
    elif name == "set_role_key":
        assert len(a.payload) == 16  # the new reader key's id
        h.console.rolekeys.set_key(roles.READER, ROLE_KEYS[roles.READER])
    else:
        assert calls == [(name, payload)], calls  # secrets arrive decrypted
        assert a.payload == b"ran " + name.encode() + b":" + payload


def test_role_matrix():
    calls = []
    events = []
    c = make_console(calls=calls, events=events)
    everyone = sorted(roles.CODES)
    assert sorted(ADMIN_CMDS + ["hello", "auth_begin", "auth_finish"]) == everyone
    h = Host(c)
    for name in ADMIN_CMDS:
        _expect(h, roles.PUBLIC, name, calls)
    for role in roles.ROLES:
        h = Host(c)
        h.login(role)
        for name in ADMIN_CMDS:
            del events[:]
            _expect(h, role, name, calls)
            privileged = name in ADMIN_CMDS[len(READER_CMDS):] and name in ALLOWED[role]
            actions = [e for e in events if e[0] == roles.EV_ACTION]
            assert actions == ([(roles.EV_ACTION, roles.ROLE_NAMES[role], name)] if privileged else []), \
                (name, events)
        # unknown codes inside a session: unknown_command, with the session's MAC
        for code in range(256):
            if roles.lookup(code) is None:
                a = h.request(code)
                assert error_of(a) == ERR_UNKNOWN_COMMAND and a.mac is not None
    # a secret sent in the clear is refused before the handler sees it
    h = Host(c)
    h.login(roles.ADMIN)
    del calls[:]
    for name in SECRET_CMDS:
        assert error_of(h.request(roles.CODES[name], b"\x01" + bytes(32))) == ERR_NEEDS_ENCRYPTION
    assert not calls


def test_rejected_frames():
    calls = []
    c = make_console(calls=calls)
    h = Host(c)
    # wrong key: auth_failed, no session
    assert error_of(h.login(roles.ADMIN, ROLE_KEYS[roles.OPERATOR])) == ERR_AUTH_FAILED
    assert c.role == "none"
    assert not error_of(h.login(roles.READER))
    status = h.frame(0x10, b"s1")
    assert not error_of(decode_all(c.feed(status))[0])
    # replayed frame: its MAC is fine, its seq is not new
    assert error_of(decode_all(c.feed(status))[0]) == ERR_REPLAY
    # reordered: seq below the newest accepted one
    later = h.frame(0x10, seq=h.seq + 5)
    earlier = h.frame(0x10, seq=h.seq + 2)
    assert not error_of(decode_all(c.feed(later))[0])
    assert error_of(decode_all(c.feed(earlier))[0]) == ERR_REPLAY
    h.seq += 5
    # tampered MAC, tampered payload (CRC made right again), MAC stripped
    f = bytearray(h.frame(0x10, b"abc"))
    f[9 + 3] ^= 0x40
    assert error_of(h.send(framing.encode(0x10, h.seq, b"abc", 0, bytes(f[12:28])))[0]) == ERR_BAD_MAC
    assert error_of(h.send(framing.encode(0x10, h.seq + 1, b"abd", 0, bytes(f[12:28])))[0]) == ERR_BAD_MAC
    assert error_of(h.request(0x10, keys=False)) == ERR_BAD_MAC
    # a frame of another session (the same role, an earlier login)
    old_keys = h.keys
    old_frame = h.frame(0x10, b"old")
    assert not error_of(h.login(roles.READER))
    assert error_of(decode_all(c.feed(old_frame))[0]) == ERR_BAD_MAC
    assert error_of(h.request(0x10, keys=old_keys)) == ERR_BAD_MAC
    # truncated frame: no answer until the frame time-out, then timeout, and the line works again
    part = h.frame(0x10, b"cut")[:-3]
    assert c.feed(part) == b""
    h.console._ticks.advance(framing.FRAME_TIMEOUT_MS + 1)
    assert [error_of(a) for a in decode_all(c.poll())] == [ERR_TIMEOUT]
    assert not error_of(h.request(0x10))
    # bad CRC
    f = bytearray(h.frame(0x10))
    f[-2] ^= 0xFF
    answers = [error_of(a) for a in h.send(bytes(f))]
    # the bytes after the bad frame's start byte are searched again: a 0xA5 in its random MAC may start
    # more (rejected) frames; zero bytes up to a frame's size flush any of them out
    answers += [error_of(a) for a in h.send(bytes(framing.MAX_FRAME))]
    assert answers[0] == ERR_BAD_CRC and set(answers) <= {ERR_BAD_CRC, ERR_BAD_VERSION, ERR_TOO_LONG,
                                                           ERR_MALFORMED}, answers
    assert c._decoder.pending == 0
    # a host never sends error or response frames; the console never answers its own echo
    assert c.feed(framing.encode(0x10, 1, b"", framing.FLAG_RESPONSE)) == b""
    assert error_of(h.request(0x10, flags=framing.FLAG_ERROR, keys=False)) == ERR_MALFORMED
    assert calls == [("status", b"s1"), ("status", b""), ("status", b"")]


def test_handler_failures_become_error_frames():
    def boom(payload):
        raise RuntimeError("secret detail must not leak")

    def busy(payload):
        raise CommandError(ERR_BUSY, "ota running")

    def big(payload):
        return bytes(framing.MAX_PAYLOAD + 1)

    def reenter(payload):
        return c.feed(b"\xa5")

    c = make_console(handlers={"status": boom, "registers": busy, "export": big, "event_log": reenter})
    h = Host(c)
    h.login(roles.READER)
    a = h.request(0x10)
    assert error_of(a) == ERR_INTERNAL and b"secret" not in a.payload and a.payload[5:] == b"RuntimeError"
    a = h.request(0x11)
    assert error_of(a) == ERR_BUSY and a.payload[5:] == b"ota running"
    assert error_of(h.request(0x13)) == ERR_INTERNAL
    answer = decode_all(h.request(0x14).payload)  # the re-entered feed was refused as busy
    assert [error_of(x) for x in answer] == [ERR_BUSY]
    assert error_of(h.request(0x12)) == framing.ERR_UNSUPPORTED  # no handler supplied
    assert not error_of(h.request(roles.LOGOUT))
    with raises(ValueError):
        make_console(handlers={"stauts": boom})


def test_session_idle_timeout():
    clock = Clock()
    c = make_console(clock=clock)
    h = Host(c)
    h.login(roles.OPERATOR)
    clock.advance(SESSION_IDLE_MS - 1)
    assert not error_of(h.request(0x10))
    clock.advance(SESSION_IDLE_MS + 1)
    assert error_of(h.request(0x10)) == ERR_NOT_AUTHENTICATED


def test_backoff_grows_and_survives_reboot():
    assert [delay_ms(n) for n in (1, 3, 4, 5, 6, 13, 14, 100, 65535)] == \
        [0, 0, 1000, 2000, 4000, 512000, MAX_DELAY_MS, MAX_DELAY_MS, MAX_DELAY_MS]
    backend = MemBackend()
    clock = Clock()
    events = []
    c = make_console(backend, clock, events)
    wrong = bytes(32)
    waits = []
    for attempt in range(1, 8):
        a = Host(c).login(roles.ADMIN, wrong)
        assert error_of(a) == ERR_AUTH_FAILED
        waits.append(framing.parse_error(a.payload)[1])
        assert events[-1] == (roles.EV_AUTH_FAILED, "admin", "failures=%d backoff_ms=%d"
                              % (attempt, delay_ms(attempt)))
        if waits[-1]:
            # while it lasts, every try is refused and nothing is counted
            b = Host(c).login(roles.ADMIN)
            assert error_of(b) == ERR_BACKOFF and framing.parse_error(b.payload)[1] == waits[-1]
            clock.advance(waits[-1] - 1)
            assert error_of(Host(c).login(roles.ADMIN)) == ERR_BACKOFF
            clock.advance(1)
    assert waits == [0, 0, 0, 1000, 2000, 4000, 8000]
    # the other roles are not slowed down by attacks on admin
    assert not error_of(Host(c).login(roles.READER))
    # 8th failure: 16 s; then a reboot: a new console over the same storage
    assert error_of(Host(c).login(roles.ADMIN, wrong)) == ERR_AUTH_FAILED
    clock.advance(10000)
    c = make_console(backend, Clock(5), events)
    assert c.rolekeys.failures(roles.ADMIN) == 8
    a = Host(c).login(roles.ADMIN)
    assert error_of(a) == ERR_BACKOFF and framing.parse_error(a.payload)[1] == 16000  # never shortened
    c._ticks.advance(16000)
    # the right key now: counted before the check, cleared after it
    saves = len(backend.saves)
    assert not error_of(Host(c).login(roles.ADMIN))
    admin_fails = [d[13:15] for n, d in backend.saves[saves:] if n == "authfail"]  # FRAMING.md 7.2
    assert admin_fails == [b"\x00\x09", b"\x00\x00"], admin_fails
    c = make_console(backend, Clock(), events)
    assert c.rolekeys.failures(roles.ADMIN) == 0 and c.rolekeys.remaining_ms(roles.ADMIN) == 0
    # a damaged counter blob is never "fresh": the longest back-off
    blob = bytearray(backend.blobs["authfail"])
    blob[3] ^= 1
    backend.blobs["authfail"] = bytes(blob)
    c = make_console(backend, Clock(), events)
    assert "authfail" in c.rolekeys.damage
    a = Host(c).login(roles.READER)
    assert error_of(a) == ERR_BACKOFF and framing.parse_error(a.payload)[1] == MAX_DELAY_MS


def test_role_keys_stored_and_erased():
    backend = MemBackend()
    make_console(backend)
    assert sorted(backend.blobs) == ["rolekeys"]
    c2 = make_console(backend, keys=False)
    assert c2.rolekeys.roles() == list(roles.ROLES)
    assert not error_of(Host(c2).login(roles.OPERATOR))
    c2.rolekeys.erase_keys()
    c3 = make_console(backend, keys=False)
    assert c3.rolekeys.roles() == []
    assert error_of(Host(c3).login(roles.ADMIN)) == ERR_NO_KEY
    blob = bytearray(20)
    backend.blobs["rolekeys"] = bytes(blob)
    c4 = make_console(backend, keys=False)
    assert "rolekeys" in c4.rolekeys.damage and c4.rolekeys.roles() == []


def test_bounded_memory_per_frame():
    c = make_console(handlers={"export": lambda p: b"export:" + p})
    h = Host(c)
    h.login(roles.READER)
    payload = bytes(framing.MAX_PAYLOAD - 20)  # the fake handler's answer adds its name
    frames = [h.frame(0x13, payload) for _ in range(40)]
    garbage = bytes((i * 13 + 1) & 0x7F for i in range(512))  # no start byte in it
    for f in frames[:5]:  # warm-up
        c.feed(f)
    gc.collect()
    base = gc.mem_alloc()
    worst = 0
    for f in frames[5:]:
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        out = c.feed(f)
        used = gc.mem_alloc() - before
        gc.enable()
        assert len(out) > framing.MAX_PAYLOAD
        worst = max(worst, used)
    out = None
    gc.collect()
    grown = gc.mem_alloc() - base
    print("console: worst allocation per 1 KB frame %d bytes; heap growth after 35 frames %d bytes"
          % (worst, grown))
    assert worst < 16 * 1024
    assert grown < 2048
    # the decoder allocates nothing while it hunts or collects a frame
    d = framing.Decoder()
    part = frames[0][:700]
    micropython.heap_lock()
    try:
        r1 = d.feed(garbage, 0)
        r2 = d.feed(part, 1)
    finally:
        micropython.heap_unlock()
    assert len(r1) == 0 and len(r2) == 0 and d.pending == 700


def test_set_role_key_then_login_with_it():
    c = make_console()
    h = Host(c)
    h.login(roles.ADMIN)
    new = os.urandom(32)
    a = h.request(roles.SET_ROLE_KEY, bytes((roles.OPERATOR,)) + new, encrypt=True)
    assert not error_of(a)
    assert error_of(Host(c).login(roles.OPERATOR)) == ERR_AUTH_FAILED  # the old key is gone
    assert not error_of(Host(c).login(roles.OPERATOR, new))
    h = Host(c)
    h.login(roles.ADMIN)
    a = h.request(roles.SET_ROLE_KEY, b"\x09" + new, encrypt=True)
    assert error_of(a) == framing.ERR_BAD_PAYLOAD


class FailingBackend(MemBackend):
    """Storage that can no longer write the failure counter (full, or worn out)."""

    def save(self, name, data):
        if name == "authfail":
            raise OSError(28, "no space")
        MemBackend.save(self, name, data)


def test_counter_that_cannot_be_stored_refuses_the_login():
    backend = FailingBackend()
    c = make_console(backend)
    h = Host(c)
    a = h.login(roles.ADMIN)  # the right key: still refused, the attempt could not be counted
    assert error_of(a) == ERR_INTERNAL and c.role == "none" and h.keys is None
    assert error_of(h.request(0x10)) == ERR_NOT_AUTHENTICATED

    class Unreadable(MemBackend):
        def load(self, name):
            raise OSError(5, "EIO")

    c = make_console(Unreadable(), keys=False)
    assert sorted(c.rolekeys.damage) == ["authfail", "rolekeys"]
    assert error_of(Host(c).login(roles.READER)) == ERR_NO_KEY


def test_status_and_sequence_end():
    c = make_console(keys=False)
    c.rolekeys.set_key(roles.READER, ROLE_KEYS[roles.READER])
    st = c.status()
    assert st["session"] == "none" and st["roles"]["admin"]["key_id"] is None
    assert len(st["roles"]["reader"]["key_id"]) == 16 and st["damage"] == {}
    assert repr(ROLE_KEYS[roles.READER]) not in repr(st)
    h = Host(c)
    h.seq = framing.MAX_SEQ - 4  # auth_begin, auth_finish take the next two
    assert not error_of(h.login(roles.READER))
    assert c.status()["session"] == "reader"
    assert not error_of(h.request(0x10)) and h.seq == framing.MAX_SEQ - 1
    assert not error_of(h.request(0x10, seq=framing.MAX_SEQ))  # the last one a session has
    assert error_of(h.request(0x10, seq=framing.MAX_SEQ)) == ERR_REPLAY
    assert error_of(h.request(0x10, seq=1)) == ERR_REPLAY
    assert c.status()["roles"]["reader"]["failures"] == 0


def test_write_callback_gets_every_answer():
    sent = []
    from umeter.console.console import Console
    c = Console(MemBackend(), {}, PUBLIC_LINE, write=sent.append, ticks_ms=Clock())
    hello = framing.encode(roles.HELLO, 1)
    assert c.feed(hello + hello + b"\xa5\x07" + bytes(20)) == b""
    got = [decode_all(s)[0] for s in sent]
    assert [g.payload for g in got[:2]] == [PUBLIC_LINE, PUBLIC_LINE]
    assert [error_of(g) for g in got] == [0, 0, ERR_BAD_VERSION]


def test_privileged_action_that_cannot_be_logged_does_not_run():
    calls = []

    def log_down(code, role, detail):
        raise OSError(28, "journal full")

    from umeter.console.console import Console
    from mpt_console_kit import fake_handlers
    c = Console(MemBackend(), fake_handlers(calls), PUBLIC_LINE, on_event=log_down, ticks_ms=Clock())
    for role, key in ROLE_KEYS.items():
        c.rolekeys.set_key(role, key)
    h = Host(c)
    assert not error_of(h.login(roles.OPERATOR))  # auth events that cannot be logged do not lock out
    a = h.request(0x20, b"t")
    assert error_of(a) == ERR_INTERNAL and a.payload[5:] == b"event log unavailable"
    assert not error_of(h.request(0x10))  # reader-level commands are not logged: they run
    assert calls == [("status", b"")]
