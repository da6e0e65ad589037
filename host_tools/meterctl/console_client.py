"""Host side of the production-mode console protocol (firmware/umeter/console/FRAMING.md).

    client = ConsoleClient(port.read, port.write)     # read(n) -> bytes (b"" when nothing came yet)
    client.hello()                                    # the public line, as text
    client.login("reader", key)                       # 32-byte role key; checks the device's proof too
    client.call("status")                             # -> response payload bytes
    client.call("set_role_key", b"\\x01" + new_key, secret=True)   # secrets travel encrypted

Frames are built and parsed by the firmware's own framing and session modules (imported through
meterctl.mpcompat), so host and device cannot disagree about a byte. An error frame raises
ConsoleError naming the device's error code (e.g. "forbidden", "backoff"); an answer that is not
authentic or does not come in time raises ProtocolError.
"""
import os
import time

from meterctl import mpcompat
from meterctl.cli import CliError

mpcompat.install()
from umeter.console import framing, roles  # noqa: E402
from umeter.console.session import (SessionKeys, client_proof, device_proof, equal, NONCE_LEN,  # noqa: E402
                                    SID_LEN, DIR_TO_DEVICE, DIR_TO_HOST)

DEFAULT_TIMEOUT = 5.0
REFUSAL_GRACE = 0.5   # after a decoder refusal, how long the real answer may still come
_READ_SIZE = 256
_DRAIN_READS = 64


class ConsoleError(CliError):
    """The device answered with an error frame."""

    def __init__(self, code, arg=0, text="", command=""):
        self.code = code
        self.name = framing.ERROR_NAMES.get(code, "error_%d" % code)
        self.arg = arg
        self.text = text
        detail = (": " + text) if text else ""
        if code == framing.ERR_BACKOFF or (code == framing.ERR_AUTH_FAILED and arg):
            detail += " (retry in %.1f s)" % (arg / 1000.0)
        where = (" to %s" % command) if command else ""
        super().__init__("device refused%s: %s%s" % (where, self.name, detail))


class ProtocolError(CliError):
    """No answer in time, or an answer that fails its session MAC or the device's proof."""


def _role_code(role):
    if isinstance(role, int):
        code = role
    else:
        code = roles.ROLE_CODES.get(role, -1)
    if code not in roles.ROLES:
        raise ValueError("unknown role %r (reader, operator, admin)" % (role,))
    return code


def _command_code(command):
    if isinstance(command, int):
        return command
    code = roles.CODES.get(command)
    if code is None:
        raise ValueError("unknown console command %r" % (command,))
    return code


class ConsoleClient:
    def __init__(self, transport_read, transport_write, timeout=DEFAULT_TIMEOUT, clock=time.monotonic):
        self._read = transport_read
        self._write = transport_write
        self._timeout = timeout
        self._clock = clock
        self._decoder = framing.Decoder()
        self._backlog = []   # decoded frames not looked at yet
        self._seq = 0
        self._keys = None
        self.role = "none"

    def __repr__(self):
        return "<ConsoleClient role=%s>" % self.role

    def _next_seq(self):
        if self._seq >= framing.MAX_SEQ:
            raise ProtocolError("session sequence numbers used up: log in again")
        self._seq += 1
        return self._seq

    def _ms(self):
        return int(self._clock() * 1000)

    def _exchange(self, code, payload, flags=0, mac_keys=None):
        """Send one request; return the matching response Frame (errors raise)."""
        seq = self._next_seq()
        if mac_keys is not None:
            if flags & framing.FLAG_ENC:
                payload = mac_keys.crypt(DIR_TO_DEVICE, seq, payload)
            tag = mac_keys.tag(DIR_TO_DEVICE, flags | framing.FLAG_MAC, code, seq, payload)
            frame = framing.encode(code, seq, payload, flags, tag)
        else:
            frame = framing.encode(code, seq, payload, flags)
        self._drain()
        self._write(frame)
        return self._await(code, seq)

    def _await(self, code, seq):
        deadline = self._clock() + self._timeout
        name = roles.COMMANDS.get(code, ("0x%02x" % code,))[0]
        refusal = None  # a decoder refusal (command 0, seq 0): ours, or noise ahead of our frame
        while True:
            while self._backlog:
                r = self._backlog.pop(0)
                if (not isinstance(r, int) and r.flags & framing.FLAG_ERROR and r.command == 0
                        and r.seq == 0 and r.flags & framing.FLAG_RESPONSE):
                    if refusal is None:
                        refusal = framing.parse_error(r.payload)
                        deadline = min(deadline, self._clock() + REFUSAL_GRACE)
                    continue
                got = self._check(r, code, seq, name)
                if got is not None:
                    return got
            if self._clock() > deadline:
                if refusal is not None:
                    raise ConsoleError(refusal[0], refusal[1], refusal[2], name)
                raise ProtocolError("no answer from the device to %s within %.1f s" % (name, self._timeout))
            chunk = self._read(_READ_SIZE)
            self._backlog.extend(self._decoder.feed(chunk or b"", self._ms()))

    def _check(self, r, code, seq, name):
        """The response to (code, seq), None for frames to skip; raises on an error answer."""
        if isinstance(r, int):
            return None  # garbage on the line (the device's answer, if any, follows)
        if not r.flags & framing.FLAG_RESPONSE:
            return None  # our own request echoed
        if r.command != code or r.seq != seq:
            return None  # a stale answer to an earlier request
        if r.mac is not None and self._keys is not None:
            if not equal(r.mac, self._keys.tag(DIR_TO_HOST, r.flags, r.command, r.seq, r.payload)):
                raise ProtocolError("answer to %s fails its session MAC" % name)
        if r.flags & framing.FLAG_ERROR:
            err, arg, text = framing.parse_error(r.payload)
            if err in (framing.ERR_NOT_AUTHENTICATED, framing.ERR_BAD_MAC):
                self._keys = None
                self.role = "none"
            raise ConsoleError(err, arg, text, name)
        if self._keys is not None and r.mac is None and code not in (roles.HELLO, roles.AUTH_BEGIN):
            raise ProtocolError("answer to %s carries no session MAC" % name)
        return r

    def _drain(self):
        """Drop what is waiting on the line (answers to nothing we will ask about), boundedly."""
        self._backlog = []
        for _ in range(_DRAIN_READS):
            if not self._read(_READ_SIZE):
                break

    # --- the public part ------------------------------------------------------------------------------
    def hello(self):
        """The device's public line (product, software id, serial number, mode)."""
        return self._exchange(roles.HELLO, b"").payload.decode()

    def login(self, role, key):
        """Authenticate as `role` ("reader", "operator", "admin") with its 32-byte key."""
        code = _role_code(role)
        if len(key) != 32:
            raise ValueError("a role key is 32 bytes")
        self._keys = None
        self.role = "none"
        challenge = self._exchange(roles.AUTH_BEGIN, bytes((code,))).payload
        if len(challenge) != SID_LEN + NONCE_LEN:
            raise ProtocolError("malformed challenge from the device")
        sid, dnonce = challenge[:SID_LEN], challenge[SID_LEN:]
        cnonce = os.urandom(NONCE_LEN)
        keys = SessionKeys(key, code, sid, dnonce, cnonce)
        seq = self._next_seq()
        self._drain()
        self._write(framing.encode(roles.AUTH_FINISH, seq, cnonce + client_proof(key, code, dnonce, cnonce)))
        self._keys = keys  # the answer is checked with the new session's MAC
        try:
            r = self._await(roles.AUTH_FINISH, seq)
            if r.mac is None or not equal(r.payload, device_proof(key, code, dnonce, cnonce)):
                raise ProtocolError("the device did not prove it holds the %s key" % roles.ROLE_NAMES[code])
        except BaseException:
            self._keys = None
            raise
        self.role = roles.ROLE_NAMES[code]

    # --- the session ----------------------------------------------------------------------------------
    def call(self, command, payload=b"", secret=False):
        """Run `command` (a name from the console's command table, or its code) -> response payload."""
        if self._keys is None:
            raise ProtocolError("not logged in: call login(role, key) first")
        flags = framing.FLAG_ENC if secret else 0
        return self._exchange(_command_code(command), bytes(payload), flags, self._keys).payload

    def logout(self):
        if self._keys is None:
            return
        try:
            self.call(roles.LOGOUT)
        finally:
            self._keys = None
            self.role = "none"
