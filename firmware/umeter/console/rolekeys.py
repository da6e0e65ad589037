# Role keys and the failed-attempt counters, in MCU-internal storage (a keystore blob backend:
# load(name) -> bytes or None, save(name, data) atomic, erase(name)). FRAMING.md section 7.
# Every attempt is counted *before* the proof is checked (and cleared after a success), so cutting power
# during a check never saves an attempt. The back-off is counted down in the console's own ticks (no
# trusted clock) and persisted conservatively: a reboot restarts the last stored delay, never shortens it.
import binascii
import hashlib

from micropython import const

from umeter.console.roles import ROLES, ROLE_NAMES, EV_AUTH_OK, EV_AUTH_FAILED, EV_ROLE_KEY

KEYS_BLOB = "rolekeys"      # NVS names are at most 15 characters
FAILS_BLOB = "authfail"
_VERSION = const(1)
_CHECK = const(4)           # SHA-256(data)[:4], as in the keystore
KEY_LEN = const(32)
FREE_TRIES = const(3)       # failures without delay
FIRST_DELAY_MS = const(1000)
MAX_DELAY_MS = const(900000)  # 15 minutes
MAX_FAILS = const(0xFFFF)
KEY_ID_LABEL = b"umeter role key id v1"


class RoleKeyError(Exception):
    """A role key could not be installed (wrong size, unknown role)."""


def role_key_id(key):
    """Public id of a role key: SHA-256(label || key)[:8] as hex. Never the key."""
    return binascii.hexlify(hashlib.sha256(KEY_ID_LABEL + bytes(key)).digest()[:8]).decode()


def delay_ms(failures):
    """Back-off after `failures` consecutive failed attempts: none for FREE_TRIES, then 1 s doubling
    up to 15 minutes (computed without ints above MAX_DELAY_MS)."""
    if failures <= FREE_TRIES:
        return 0
    d = FIRST_DELAY_MS
    for _ in range(failures - FREE_TRIES - 1):
        d += d
        if d >= MAX_DELAY_MS:
            return MAX_DELAY_MS
    return d


def _seal(data):
    return bytes(data) + hashlib.sha256(data).digest()[:_CHECK]


def _open(blob):
    """The data of an intact blob, None for a missing one; raises ValueError for a damaged one."""
    if blob is None:
        return None
    data = bytes(blob[:-_CHECK])
    if len(blob) < _CHECK or hashlib.sha256(data).digest()[:_CHECK] != bytes(blob[-_CHECK:]):
        raise ValueError("damaged")
    return data


def _u32(b, o):
    return (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]


class RoleKeys:
    """The three role keys and, per role, the failure count and remaining back-off (ms)."""

    def __init__(self, backend, on_event=None):
        self._backend = backend
        self._on_event = on_event
        self._keys = {}
        self._fails = {}
        self._wait = {}
        self.damage = {}
        self._load_keys()
        self._load_fails()

    def __repr__(self):
        return "<RoleKeys roles=%s>" % ",".join(ROLE_NAMES[r] for r in sorted(self._keys))

    # --- keys -----------------------------------------------------------------------------------------
    def _load_keys(self):
        try:
            data = _open(self._backend.load(KEYS_BLOB))
            if data is not None and (len(data) != 1 + 33 * len(ROLES) or data[0] != _VERSION):
                raise ValueError("unknown layout")
        except Exception as e:  # damaged, or the storage cannot be read (KeystoreError)
            self.damage["rolekeys"] = "role keys %s: no role can log in; provision the role keys again" % e
            return
        if data is None:
            return
        for i, role in enumerate(ROLES):
            o = 1 + 33 * i
            if data[o]:
                self._keys[role] = bytes(data[o + 1:o + 33])

    def _save_keys(self):
        out = bytearray(1 + 33 * len(ROLES))
        out[0] = _VERSION
        for i, role in enumerate(ROLES):
            key = self._keys.get(role)
            if key is not None:
                out[1 + 33 * i] = 1
                out[2 + 33 * i:34 + 33 * i] = key
        self._backend.save(KEYS_BLOB, _seal(out))
        self.damage.pop("rolekeys", None)

    def key(self, role):
        """The role's key, or None when none is installed (that role cannot log in)."""
        return self._keys.get(role)

    def roles(self):
        return sorted(self._keys)

    def set_key(self, role, key):
        """Install (replace) one role key. Returns its key id."""
        if role not in ROLES:
            raise RoleKeyError("unknown role %r" % (role,))
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
            raise RoleKeyError("a role key is %d bytes" % KEY_LEN)
        self._keys[role] = bytes(key)
        self._save_keys()
        self._event(EV_ROLE_KEY, role, "set %s" % role_key_id(key))
        return role_key_id(key)

    def erase_keys(self):
        """Reset to the original state: every role key goes. The failure counters stay."""
        self._keys = {}
        self._backend.erase(KEYS_BLOB)
        self.damage.pop("rolekeys", None)
        self._event(EV_ROLE_KEY, 0, "erase all")

    def status(self):
        """What status may show: key ids (never keys), failures and back-off per role, damage."""
        roles = {}
        for role in ROLES:
            key = self._keys.get(role)
            roles[ROLE_NAMES[role]] = {"key_id": role_key_id(key) if key is not None else None,
                                       "failures": self._fails[role], "backoff_ms": self._wait[role]}
        return {"roles": roles, "damage": dict(self.damage)}

    # --- failed attempts ------------------------------------------------------------------------------
    def _load_fails(self):
        try:
            data = _open(self._backend.load(FAILS_BLOB))
            if data is not None and (len(data) != 1 + 6 * len(ROLES) or data[0] != _VERSION):
                raise ValueError("unknown layout")
        except Exception:  # damaged, or the storage cannot be read
            # Never 'fresh' on damage: every role starts at the longest back-off.
            self.damage["authfail"] = "failed-attempt counters damaged: back-off at its maximum"
            for role in ROLES:
                self._fails[role] = FREE_TRIES + 1
                self._wait[role] = MAX_DELAY_MS
            return
        for i, role in enumerate(ROLES):
            if data is None:
                self._fails[role] = 0
                self._wait[role] = 0
                continue
            o = 1 + 6 * i
            self._fails[role] = (data[o] << 8) | data[o + 1]
            self._wait[role] = min(_u32(data, o + 2) if data[o + 2] < 0x40 else MAX_DELAY_MS, MAX_DELAY_MS)

    def _save_fails(self):
        out = bytearray(1 + 6 * len(ROLES))
        out[0] = _VERSION
        for i, role in enumerate(ROLES):
            o = 1 + 6 * i
            f = self._fails[role]
            w = self._wait[role]
            out[o] = f >> 8
            out[o + 1] = f & 0xFF
            out[o + 2] = w >> 24
            out[o + 3] = (w >> 16) & 0xFF
            out[o + 4] = (w >> 8) & 0xFF
            out[o + 5] = w & 0xFF
        self._backend.save(FAILS_BLOB, _seal(out))
        self.damage.pop("authfail", None)

    def failures(self, role):
        return self._fails.get(role, 0)

    def remaining_ms(self, role):
        """Back-off still to wait before `role` may try again (0: it may)."""
        return self._wait.get(role, 0)

    def elapse(self, ms):
        """Count `ms` of the console's monotonic time off every back-off (RAM only)."""
        if ms <= 0:
            return
        for role in ROLES:
            w = self._wait[role]
            if w:
                self._wait[role] = w - ms if w > ms else 0

    def begin_attempt(self, role):
        """Start one login attempt: 0 when it may go on (already counted as a failure and persisted,
        with the back-off that failure would earn), else the back-off still to wait (nothing counted)."""
        w = self._wait.get(role, 0)
        if w:
            return w
        f = min(self._fails[role] + 1, MAX_FAILS)
        self._fails[role] = f
        self._wait[role] = delay_ms(f)
        self._save_fails()
        return 0

    def attempt_failed(self, role):
        self._event(EV_AUTH_FAILED, role, "failures=%d backoff_ms=%d" % (self._fails[role], self._wait[role]))

    def attempt_ok(self, role):
        self._fails[role] = 0
        self._wait[role] = 0
        self._save_fails()
        self._event(EV_AUTH_OK, role, "")

    def _event(self, code, role, detail):
        if self._on_event is None:
            return
        try:
            self._on_event(code, ROLE_NAMES.get(role, "none"), detail)
        except Exception:  # the log is the app's; a failing log never stops authentication
            pass
