"""meterctl.console_client against the firmware console (umeter.console), in-process on CPython."""
import pytest

from meterctl.cli import CliError
from meterctl.console_client import ConsoleClient, ConsoleError, ProtocolError
from mpt_console_kit import make_console, ROLE_KEYS, PUBLIC_LINE, Clock
from umeter.console import framing, roles
from umeter.console.session import DIR_TO_HOST


class Line:
    """The serial line: what the client writes is fed to the console; its answers wait to be read.
    `chunk` limits each read; `tamper(frame_bytes) -> bytes` rewrites the device's answers."""

    def __init__(self, console, chunk=256, tamper=None, noise=b""):
        self.console = console
        self.rx = bytearray()
        self.chunk = chunk
        self.tamper = tamper
        self.noise = noise
        self.written = []

    def write(self, data):
        self.written.append(bytes(data))
        out = self.console.feed(data)
        if self.tamper is not None and out:
            out = self.tamper(out)
        self.rx.extend(self.noise + out)

    def read(self, n):
        n = min(n, self.chunk)
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out


def client(console=None, **kw):
    console = console or make_console()
    line = Line(console, **kw)
    return ConsoleClient(line.read, line.write, timeout=0.5), line


def test_hello_login_call_logout_per_role():
    calls = []
    c, line = client(make_console(calls=calls))
    assert c.hello() == PUBLIC_LINE.decode()
    for name, role in (("reader", roles.READER), ("operator", roles.OPERATOR), ("admin", roles.ADMIN)):
        c.login(name, ROLE_KEYS[role])
        assert c.role == name and line.console.role == name
        assert c.call("status", b"q") == b"ran status:q"
        assert c.call(0x11) == b"ran registers:"
        c.logout()
        assert c.role == "none" and line.console.role == "none"
    assert calls == [("status", b"q"), ("registers", b"")] * 3


def test_errors_name_the_device_code():
    c, _ = client()
    with pytest.raises(ProtocolError, match="not logged in"):
        c.call("status")
    c.login("reader", ROLE_KEYS[roles.READER])
    with pytest.raises(ConsoleError, match="forbidden") as e:
        c.call("set_time", b"x")
    assert e.value.name == "forbidden" and e.value.code == framing.ERR_FORBIDDEN
    assert isinstance(e.value, CliError)
    with pytest.raises(ConsoleError, match="unknown_command"):
        c.call(0x7E)
    with pytest.raises(ValueError, match="unknown console command"):
        c.call("no_such_thing")
    with pytest.raises(ValueError, match="unknown role"):
        c.login("root", bytes(32))


def test_wrong_key_then_backoff_message():
    clock = Clock()
    c, _ = client(make_console(clock=clock))
    for _ in range(4):
        with pytest.raises(ConsoleError, match="auth_failed"):
            c.login("admin", bytes(32))
    with pytest.raises(ConsoleError, match=r"backoff \(retry in 1.0 s\)") as e:
        c.login("admin", ROLE_KEYS[roles.ADMIN])
    assert e.value.arg == 1000
    clock.advance(1000)
    c.login("admin", ROLE_KEYS[roles.ADMIN])
    assert c.role == "admin"


def test_secret_call_travels_encrypted():
    c, line = client()
    c.login("admin", ROLE_KEYS[roles.ADMIN])
    new = bytes(range(100, 132))
    key_id = c.call("set_role_key", bytes((roles.READER,)) + new, secret=True)
    assert len(key_id) == 16
    assert not any(new in w for w in line.written), "the key went over the line in the clear"
    with pytest.raises(ConsoleError, match="needs_encryption"):
        c.call("set_role_key", bytes((roles.READER,)) + new)
    c.login("reader", new)
    assert c.role == "reader"


def test_chunked_and_noisy_line():
    c, _ = client(chunk=1, noise=b"\x00\x13")
    assert c.hello().startswith("umeter")
    c.login("operator", ROLE_KEYS[roles.OPERATOR])
    assert c.call("set_time", b"t") == b"ran set_time:t"


def test_tampered_answers_are_refused():
    def flip_payload(out):
        f = bytearray(out)
        if f[4] & framing.FLAG_MAC and not f[4] & framing.FLAG_ERROR and f[3] > 0:
            f[9] ^= 1  # first payload byte, CRC made right again: only the MAC can tell
            crc = framing.crc16(f, 0, len(f) - 2)
            f[-2:] = bytes((crc >> 8, crc & 0xFF))
        return bytes(f)

    c, line = client()
    c.login("reader", ROLE_KEYS[roles.READER])
    line.tamper = flip_payload
    with pytest.raises(ProtocolError, match="fails its session MAC"):
        c.call("status", b"x")


def test_answer_without_mac_inside_a_session_is_refused():
    c, line = client()
    c.login("reader", ROLE_KEYS[roles.READER])

    def strip_mac(out):
        frames = framing.Decoder().feed(out, 0)
        f = frames[0]
        return framing.encode(f.command, f.seq, f.payload, f.flags & ~framing.FLAG_MAC)

    line.tamper = strip_mac
    with pytest.raises(ProtocolError, match="carries no session MAC"):
        c.call("status")


def test_device_without_the_key_cannot_fake_a_login():
    """A fake device answers auth_finish with a frame MAC'd under a session it derived with a wrong
    key: the client refuses it (it checks the device's proof and MAC)."""
    real = make_console()
    state = {}

    def impostor(out):
        frames = framing.Decoder().feed(out, 0)
        f = frames[0]
        if f.command == roles.AUTH_BEGIN:
            state["challenge"] = f.payload
        return out

    c, line = client(real, tamper=impostor)
    c.login("reader", ROLE_KEYS[roles.READER])  # the real device: fine

    def forge(out):
        f = framing.Decoder().feed(out, 0)[0]
        if f.command != roles.AUTH_FINISH:
            return out
        from umeter.console.session import SessionKeys
        keys = SessionKeys(bytes(32), roles.READER, state["challenge"][:8], state["challenge"][8:], bytes(32))
        payload = bytes(32)
        flags = framing.FLAG_RESPONSE
        return framing.encode(f.command, f.seq, payload, flags,
                              keys.tag(DIR_TO_HOST, flags | framing.FLAG_MAC, f.command, f.seq, payload))

    line.tamper = lambda out: forge(impostor(out))
    with pytest.raises(ProtocolError):
        c.login("reader", ROLE_KEYS[roles.READER])
    assert c.role == "none"


def test_silent_device_times_out():
    t = [0.0]

    def clock():
        t[0] += 0.1
        return t[0]

    c = ConsoleClient(lambda n: b"", lambda data: None, timeout=2.0, clock=clock)
    with pytest.raises(ProtocolError, match="no answer from the device to hello within 2.0 s"):
        c.hello()
    flood = ConsoleClient(lambda n: b"\xa5\x02" * 100, lambda data: None, timeout=2.0, clock=clock)
    with pytest.raises(ProtocolError, match="no answer"):
        flood.hello()


def test_decoder_refusal_reaches_the_caller():
    """A frame damaged on the way in: the device's decoder refuses it and the caller hears why."""
    console = make_console()
    rx = bytearray()

    def write_garbled(data):
        rx.extend(console.feed(bytes(data[:-1]) + bytes((data[-1] ^ 0xFF,))))

    def read(n):
        out = bytes(rx[:n])
        del rx[:n]
        return out

    with pytest.raises(ConsoleError, match="bad_crc"):
        ConsoleClient(read, write_garbled, timeout=0.5).hello()
