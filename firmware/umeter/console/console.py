# The production-mode console (FRAMING.md): bytes from the serial line in, bytes to send out. Before
# authentication it answers only the public line and the authentication commands; after it, every
# request must carry a valid session MAC and a strictly increasing seq, and the role must allow the
# command. feed() never blocks, never raises, and does bounded work per byte and per frame, so the
# meter's loop can call it between sampling blocks.
import os

from micropython import const

from umeter.console import framing, roles
from umeter.console.framing import (FLAG_RESPONSE, FLAG_ERROR, FLAG_MAC, FLAG_ENC, MAX_PAYLOAD, MAX_SEQ,
                                    ERR_UNKNOWN_COMMAND, ERR_NOT_AUTHENTICATED, ERR_FORBIDDEN, ERR_BAD_MAC,
                                    ERR_REPLAY, ERR_BACKOFF, ERR_AUTH_FAILED, ERR_NO_CHALLENGE, ERR_NO_KEY,
                                    ERR_BAD_PAYLOAD, ERR_NEEDS_ENCRYPTION, ERR_UNSUPPORTED, ERR_BUSY,
                                    ERR_INTERNAL, ERR_MALFORMED)
from umeter.console.rolekeys import RoleKeys, RoleKeyError, KEY_LEN
from umeter.console.session import (SessionKeys, client_proof, device_proof, equal, NONCE_LEN, SID_LEN,
                                    PROOF_LEN, DIR_TO_DEVICE, DIR_TO_HOST)
from umeter.console.ticks import ticks_diff as _ticks_diff, ticks_ms as _default_ticks

SESSION_IDLE_MS = const(300000)   # a session with no accepted frame for 5 minutes ends
CHALLENGE_MS = const(30000)       # a device nonce is good for one answer within 30 s



class CommandError(Exception):
    """Raised by a handler to answer with a specific error code (e.g. ERR_BUSY, ERR_BAD_PAYLOAD)."""

    def __init__(self, code, text="", arg=0):
        super().__init__(text)
        self.code = code
        self.text = text
        self.arg = arg


class _Session:
    def __init__(self, keys, role, seq, now):
        self.keys = keys
        self.role = role
        self.last_seq = seq
        self.last_ms = now


class Console:
    """Console(backend, handlers, public_line, on_event=None, ticks_ms=None, urandom=None, write=None)

    backend: keystore blob backend (MCU-internal) for role keys and failure counters.
    handlers: command name -> callable(payload bytes) -> bytes (roles.app_commands() lists the names).
    public_line: bytes, or a callable returning bytes (product, software id, serial number, mode).
    on_event(code, role_name, detail): roles.EV_* events for the app to seal.
    write: optional callable(bytes); when given, every answer is written at once and feed() returns b""."""

    def __init__(self, backend, handlers, public_line, on_event=None, ticks_ms=None, urandom=None,
                 write=None):
        names = roles.app_commands()
        for name in handlers:
            if name not in names:
                raise ValueError("no console command named %r" % (name,))
        self._handlers = dict(handlers)
        self._public = public_line
        self._on_event = on_event
        self._ticks = ticks_ms or _default_ticks
        self._random = urandom or os.urandom
        self._write = write
        self.rolekeys = RoleKeys(backend, on_event)
        self._decoder = framing.Decoder()
        self._session = None
        self._challenge = None   # (role, sid, device nonce, issued ms)
        self._busy = False
        self._last_ms = self._ticks()

    def __repr__(self):
        return "<Console role=%s>" % self.role

    @property
    def role(self):
        """Name of the logged-in role, or 'none'."""
        return roles.ROLE_NAMES[self._session.role if self._session else roles.PUBLIC]

    def status(self):
        """For the app's status: the logged-in role and the role keys' state (no key material)."""
        st = self.rolekeys.status()
        st["session"] = self.role
        return st

    def end_session(self):
        self._session = None
        self._challenge = None

    def poll(self):
        """Let time pass without input: back-off, frame and session time-outs move on."""
        return self.feed(b"")

    def feed(self, data):
        """Bytes received -> bytes to send (b"" with a write callback). Never raises."""
        if self._busy:  # re-entered from a handler: the line is taken
            return self._emit(self._error(0, 0, ERR_BUSY))
        self._busy = True
        try:
            now = self._ticks()
            self._advance(now)
            results = self._decoder.feed(data, now)
            if not results:
                return b""
            out = []
            refused = False
            for r in results:
                if isinstance(r, int):  # the decoder refused bytes: one answer per call is enough,
                    if refused:         # more would only echo line noise and cost time
                        continue
                    refused = True
                answer = self._answer(r, now)
                if answer:
                    out.append(self._emit(answer))
            return b"".join(out)
        except Exception:  # nothing escapes to the line: drop what is half-read, start clean
            self._decoder.reset()
            self.end_session()
            return self._emit(self._error(0, 0, ERR_INTERNAL))
        finally:
            self._busy = False

    def _emit(self, frame):
        if self._write is None:
            return frame
        try:
            self._write(frame)
        except Exception:
            pass
        return b""

    def _advance(self, now):
        elapsed = _ticks_diff(now, self._last_ms)
        self._last_ms = now
        self.rolekeys.elapse(elapsed)
        s = self._session
        if s is not None and _ticks_diff(now, s.last_ms) > SESSION_IDLE_MS:
            self._session = None
        c = self._challenge
        if c is not None and _ticks_diff(now, c[3]) > CHALLENGE_MS:
            self._challenge = None

    # --- answers --------------------------------------------------------------------------------------
    def _error(self, command, seq, code, text="", arg=0, session=None):
        payload = framing.error_payload(code, arg, text)
        flags = FLAG_RESPONSE | FLAG_ERROR
        if session is None:
            return framing.encode(command, seq, payload, flags)
        return framing.encode(command, seq, payload, flags,
                              session.keys.tag(DIR_TO_HOST, flags | FLAG_MAC, command, seq, payload))

    def _reply(self, command, seq, payload, session=None):
        flags = FLAG_RESPONSE
        if session is None:
            return framing.encode(command, seq, payload, flags)
        return framing.encode(command, seq, payload, flags,
                              session.keys.tag(DIR_TO_HOST, flags | FLAG_MAC, command, seq, payload))

    def _answer(self, r, now):
        if isinstance(r, int):  # the decoder rejected a frame
            return self._error(0, 0, r)
        if r.flags & FLAG_RESPONSE:
            return None  # a device's own answer echoed back (loopback): never answer it
        if r.flags & FLAG_ERROR:
            return self._error(r.command, r.seq, ERR_MALFORMED, "error flag on a request")
        entry = roles.lookup(r.command)
        if entry is not None and entry[1] == roles.PUBLIC:
            return self._public_command(r, now)
        s = self._session
        if s is None:
            return self._error(r.command, r.seq, ERR_NOT_AUTHENTICATED)
        if r.mac is None or not equal(r.mac, s.keys.tag(DIR_TO_DEVICE, r.flags, r.command, r.seq, r.payload)):
            return self._error(r.command, r.seq, ERR_BAD_MAC)
        if r.seq <= s.last_seq:
            return self._error(r.command, r.seq, ERR_REPLAY, "", s.last_seq)
        s.last_seq = r.seq
        s.last_ms = now
        # From here on the frame is the session's: answers carry its MAC.
        if entry is None:
            return self._error(r.command, r.seq, ERR_UNKNOWN_COMMAND, "", 0, s)
        name, _, options = entry
        if s.role < entry[1]:
            return self._error(r.command, r.seq, ERR_FORBIDDEN, name, 0, s)
        payload = r.payload
        if options & roles.SECRET:
            if not r.flags & FLAG_ENC:
                return self._error(r.command, r.seq, ERR_NEEDS_ENCRYPTION, name, 0, s)
        if r.flags & FLAG_ENC:
            payload = s.keys.crypt(DIR_TO_DEVICE, r.seq, payload)
        return self._run(r, name, options, payload, s)

    def _run(self, r, name, options, payload, s):
        role_name = roles.ROLE_NAMES[s.role]
        if roles.privileged(r.command) and self._on_event is not None:
            try:
                self._on_event(roles.EV_ACTION, role_name, name)
            except Exception:  # a privileged action that cannot be logged does not run
                return self._error(r.command, r.seq, ERR_INTERNAL, "event log unavailable", 0, s)
        try:
            if options & roles.BUILTIN:
                result = self._builtin(r.command, payload)
            else:
                handler = self._handlers.get(name)
                if handler is None:
                    return self._error(r.command, r.seq, ERR_UNSUPPORTED, name, 0, s)
                result = handler(payload)
            if result is None:
                result = b""
            if not isinstance(result, (bytes, bytearray)) or len(result) > MAX_PAYLOAD:
                return self._error(r.command, r.seq, ERR_INTERNAL, "bad answer from %s" % name, 0, s)
        except CommandError as e:
            return self._error(r.command, r.seq, e.code, e.text, e.arg, s)
        except Exception as e:  # type only: a message could carry data the role may not see
            return self._error(r.command, r.seq, ERR_INTERNAL, type(e).__name__, 0, s)
        return self._reply(r.command, r.seq, result, s)

    def _builtin(self, command, payload):
        if command == roles.LOGOUT:
            self.end_session()
            return b""
        if command == roles.SET_ROLE_KEY:
            if len(payload) != 1 + KEY_LEN:
                raise CommandError(ERR_BAD_PAYLOAD, "role u8 + 32-byte key")
            try:
                return self.rolekeys.set_key(payload[0], payload[1:]).encode()
            except RoleKeyError as e:
                raise CommandError(ERR_BAD_PAYLOAD, str(e))
        raise CommandError(ERR_UNSUPPORTED)

    # --- public commands: hello and the two authentication steps ---------------------------------------
    def _public_command(self, r, now):
        if r.command == roles.HELLO:
            line = self._public() if callable(self._public) else self._public
            if isinstance(line, str):
                line = line.encode()
            return self._reply(r.command, r.seq, bytes(line)[:MAX_PAYLOAD])
        if r.command == roles.AUTH_BEGIN:
            return self._auth_begin(r, now)
        return self._auth_finish(r, now)

    def _auth_begin(self, r, now):
        self.end_session()  # one session at a time: asking for a challenge ends the current one
        if len(r.payload) != 1 or r.payload[0] not in roles.ROLES:
            return self._error(r.command, r.seq, ERR_BAD_PAYLOAD, "role u8: 1 reader, 2 operator, 3 admin")
        role = r.payload[0]
        if self.rolekeys.key(role) is None:
            return self._error(r.command, r.seq, ERR_NO_KEY, roles.ROLE_NAMES[role])
        wait = self.rolekeys.remaining_ms(role)
        if wait:
            return self._error(r.command, r.seq, ERR_BACKOFF, "", wait)
        sid = bytes(self._random(SID_LEN))
        nonce = bytes(self._random(NONCE_LEN))
        self._challenge = (role, sid, nonce, now)
        return self._reply(r.command, r.seq, sid + nonce)

    def _auth_finish(self, r, now):
        c = self._challenge
        self._challenge = None  # a device nonce answers once, right or wrong
        if c is None:
            return self._error(r.command, r.seq, ERR_NO_CHALLENGE)
        if len(r.payload) != NONCE_LEN + PROOF_LEN or r.seq > MAX_SEQ - 1:
            return self._error(r.command, r.seq, ERR_BAD_PAYLOAD, "client nonce 32 + proof 32")
        role, sid, dnonce, _ = c
        key = self.rolekeys.key(role)
        if key is None:
            return self._error(r.command, r.seq, ERR_NO_KEY, roles.ROLE_NAMES[role])
        wait = self.rolekeys.begin_attempt(role)  # counted (and persisted) before the check
        if wait:
            return self._error(r.command, r.seq, ERR_BACKOFF, "", wait)
        cnonce = r.payload[:NONCE_LEN]
        if not equal(r.payload[NONCE_LEN:], client_proof(key, role, dnonce, cnonce)):
            self.rolekeys.attempt_failed(role)
            return self._error(r.command, r.seq, ERR_AUTH_FAILED, "", self.rolekeys.remaining_ms(role))
        self.rolekeys.attempt_ok(role)
        s = _Session(SessionKeys(key, role, sid, dnonce, cnonce), role, r.seq, now)
        self._session = s
        return self._reply(r.command, r.seq, device_proof(key, role, dnonce, cnonce), s)
