# The meter's legally relevant settings (SETTINGS.md): one small blob `settings` in the keystore's
# MCU-internal blob backend, `data || SHA-256(data)[:4]` like every keystore entry, with a version byte.
# The board's constants are the defaults; the blob holds what the operator changed (a mask says which).
# Every value is range-checked before it is packed (struct.pack truncates silently on MicroPython).
# A blob that is missing, damaged or of another version gives the defaults and a note: never a stop.
# Pure logic (no hardware): it imports under CPython for the property tests.
import hashlib
import struct

from micropython import const

from umeter.metering.engine import DEFAULT_CALIB

BLOB = "settings"
VERSION = const(1)
SIZE = const(58)
_CHECK = const(4)
_FORMAT = ">BBHBHBH7fQQI"   # SETTINGS.md section 2 (SIZE bytes)

# mask bits: which groups the operator set (the others follow the board's constants at every boot)
_SET_CHECKPOINT = const(1)
_SET_PROFILE = const(2)
_SET_RETENTION = const(4)
_SET_POWER_FAIL = const(8)
_SET_CALIBRATION = const(16)
_SET_TIME = const(32)
_MASK_ALL = const(63)

CHECKPOINT_S = (10, 3600)
PROFILE_PERIODS = (1, 5, 10, 15, 30, 60)
RETENTION_DAYS = (0, 7300)          # 0: only the ring's own retention
HOLD_UP_MS = (1, 10000)
UNIX_S = (1577836800, 4102444800)   # 2020-01-01 .. 2100-01-01 UTC
_U64 = 0xFFFFFFFFFFFFFFFF
# Engine calibration keys (metering/engine.py DEFAULT_CALIB) in blob order, each with its allowed range
CALIBRATION = (("v_gain", 0.5, 2.0), ("i_gain", 0.5, 2.0), ("phase_deg", -20.0, 20.0),
               ("v_offset", 0.0, 50.0), ("i_offset", 0.0, 10.0), ("p_offset", -100.0, 100.0),
               ("q_offset", -100.0, 100.0))


class SettingsError(ValueError):
    """A value out of range or of the wrong type: refused, nothing changed."""


def board_defaults(board):
    """The defaults from a board module's constants (not range-checked: a board, or a test's environment,
    may run outside what an operator may set)."""
    eng = getattr(board, "ENGINE", None) or {}
    calib = dict(DEFAULT_CALIB)
    calib.update(getattr(board, "CALIBRATION", None) or {})
    return {"checkpoint_s": int(getattr(board, "CHECKPOINT_S", 60)),
            "profile_min": int(eng.get("profile_min", 15)),
            "demand_s": int(eng.get("demand_s", 60)),
            "retention_days": int(getattr(board, "RETENTION_DAYS", 0)),
            "power_fail": True,
            "hold_up_ms": int(getattr(board, "HOLD_UP_MS", 20)),
            "calibration": calib}


def _int(name, v, lo, hi):
    if isinstance(v, bool) or not isinstance(v, int):
        raise SettingsError("%s must be an integer" % name)
    if not lo <= v <= hi:
        raise SettingsError("%s must be %d..%d" % (name, lo, hi))
    return v


def _f32(v):
    # the value as the blob keeps it, so RAM and the next boot agree exactly
    return struct.unpack(">f", struct.pack(">f", v))[0]


def check_calibration(change):
    """The engine calibration keys of `change` (dict), range-checked, as stored (32-bit floats)."""
    if not isinstance(change, dict):
        raise SettingsError("calibration must be an object")
    out = {}
    ranges = dict((k, (lo, hi)) for k, lo, hi in CALIBRATION)
    for k in change:
        if k not in ranges:
            raise SettingsError("unknown calibration key %r" % (k,))
        v = change[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SettingsError("%s must be a number" % k)
        lo, hi = ranges[k]
        if not lo <= v <= hi:  # also refuses NaN
            raise SettingsError("%s must be %s..%s" % (k, lo, hi))
        out[k] = _f32(float(v))
    return out


class Settings:
    """Settings(defaults, values=None, mask=0, note=None): what is in force is the operator's value for
    every group in `mask`, else the board's default. Immutable in use: changed() returns a new one."""

    def __init__(self, defaults, values=None, mask=0, note=None):
        self.defaults = defaults
        self.mask = mask
        self.note = note
        v = {"time_unix": 0, "time_t": 0, "time_rate": 0}
        for k in ("checkpoint_s", "profile_min", "retention_days", "power_fail", "hold_up_ms"):
            v[k] = defaults[k]
        v["calibration"] = dict(defaults["calibration"])
        if values:
            for k in values:
                v[k] = values[k]
        self._v = v

    def __getattr__(self, name):
        try:
            return self._v[name]
        except KeyError:
            raise AttributeError(name)

    def changed(self, checkpoint_s=None, profile_min=None, retention_days=None, power_fail=None,
                hold_up_ms=None, calibration=None, time=None):
        """A new Settings with the given values (each range-checked; SettingsError, nothing changed).
        calibration: a dict of keys to change; time: (unix s, engine t, rate Hz)."""
        v = dict(self._v)
        v["calibration"] = dict(v["calibration"])
        mask = self.mask
        if checkpoint_s is not None:
            v["checkpoint_s"] = _int("interval_s", checkpoint_s, CHECKPOINT_S[0], CHECKPOINT_S[1])
            mask |= _SET_CHECKPOINT
        if profile_min is not None:
            p = _int("period_min", profile_min, 1, 60)
            if p not in PROFILE_PERIODS:
                raise SettingsError("period_min must be one of %s" % (PROFILE_PERIODS,))
            if (p * 60) % self.defaults["demand_s"]:
                raise SettingsError("period_min must be a multiple of the demand period (%d s)"
                                    % self.defaults["demand_s"])
            v["profile_min"] = p
            mask |= _SET_PROFILE
        if retention_days is not None:
            v["retention_days"] = _int("days", retention_days, RETENTION_DAYS[0], RETENTION_DAYS[1])
            mask |= _SET_RETENTION
        if power_fail is not None or hold_up_ms is not None:
            if power_fail is not None:
                if not isinstance(power_fail, bool):
                    raise SettingsError("enabled must be true or false")
                v["power_fail"] = power_fail
            if hold_up_ms is not None:
                v["hold_up_ms"] = _int("hold_up_ms", hold_up_ms, HOLD_UP_MS[0], HOLD_UP_MS[1])
            mask |= _SET_POWER_FAIL
        if calibration is not None:
            c = v["calibration"]
            c.update(check_calibration(calibration))
            for k in c:  # all as the blob keeps them (32-bit floats), so RAM and the next boot agree
                c[k] = _f32(c[k])
            mask |= _SET_CALIBRATION
        if time is not None:
            unix, t, rate = time
            _int("unix_s", unix, UNIX_S[0], UNIX_S[1])
            _int("engine time", t, 0, _U64)
            _int("sample rate", rate, 1, 0xFFFFFFFF)
            v["time_unix"], v["time_t"], v["time_rate"] = unix, t, rate
            mask |= _SET_TIME
        return Settings(self.defaults, v, mask, None)

    def clock(self, t, rate):
        """Unix seconds at engine time t (samples at rate Hz), or None if the time was never set, set at
        another sample rate, or set at an engine time after t (the registers were restored from an older
        checkpoint, or the journal was formatted). The clock stands still while the meter is off
        (SETTINGS.md 5)."""
        if not self.mask & _SET_TIME or rate != self.time_rate or t < self.time_t:
            return None
        return self.time_unix + (t - self.time_t) // rate

    def time_base(self):
        if not self.mask & _SET_TIME:
            return None
        return {"unix_s": self.time_unix, "at_t": self.time_t, "rate_hz": self.time_rate}

    def pack(self):
        """The blob's data (SETTINGS.md section 2), without the check."""
        v = self._v
        c = v["calibration"]
        for k, lo, hi in CALIBRATION:  # a board default outside the range is still stored exactly
            if not -3.0e38 < c[k] < 3.0e38:
                raise SettingsError("calibration %s cannot be stored" % k)
        fields = [VERSION, self.mask, _clip(v["checkpoint_s"], 0xFFFF), _clip(v["profile_min"], 0xFF),
                  _clip(v["retention_days"], 0xFFFF), 1 if v["power_fail"] else 0,
                  _clip(v["hold_up_ms"], 0xFFFF)]
        fields.extend([c[k] for k, _, _ in CALIBRATION])
        fields.extend((v["time_unix"], v["time_t"], v["time_rate"]))
        return struct.pack(_FORMAT, *fields)

    def as_dict(self):
        v = self._v
        names = (("checkpoint_s", _SET_CHECKPOINT), ("profile_min", _SET_PROFILE),
                 ("retention_days", _SET_RETENTION), ("power_fail", _SET_POWER_FAIL),
                 ("calibration", _SET_CALIBRATION), ("time", _SET_TIME))
        return {"checkpoint_s": v["checkpoint_s"], "profile_min": v["profile_min"],
                "retention_days": v["retention_days"],
                "power_fail": {"enabled": v["power_fail"], "hold_up_ms": v["hold_up_ms"]},
                "calibration": dict(v["calibration"]), "time_base": self.time_base(),
                "set_by_operator": [n for n, bit in names if self.mask & bit], "note": self.note}


def _clip(v, hi):
    # only board defaults can be outside a field (operator values are checked): keep the blob packable
    return 0 if v < 0 else hi if v > hi else v


def unpack(defaults, data):
    """Settings from a blob's data (check already removed). A field out of range falls back to its
    default, with a note; an unknown version or length gives the defaults and a note."""
    if len(data) < 1 or data[0] != VERSION:
        return Settings(defaults, None, 0, "settings version %s is not known: board defaults in force"
                        % (data[0] if data else "none"))
    if len(data) != SIZE:
        return Settings(defaults, None, 0, "settings blob has %d bytes, not %d: board defaults in force"
                        % (len(data), SIZE))
    f = struct.unpack(_FORMAT, data)
    mask = f[1] & _MASK_ALL
    calib = {}
    for i, (k, _, _) in enumerate(CALIBRATION):
        calib[k] = f[7 + i]
    fields = ((_SET_CHECKPOINT, {"checkpoint_s": f[2]}), (_SET_PROFILE, {"profile_min": f[3]}),
              (_SET_RETENTION, {"retention_days": f[4]}),
              (_SET_POWER_FAIL, {"power_fail": bool(f[5] & 1), "hold_up_ms": f[6]}),
              (_SET_CALIBRATION, {"calibration": calib}), (_SET_TIME, {"time": (f[14], f[15], f[16])}))
    s = Settings(defaults)
    bad = []
    for bit, kw in fields:
        if not mask & bit:
            continue
        try:
            s = s.changed(**kw)
        except SettingsError as e:
            bad.append(str(e))
    if bad:
        s.note = "settings out of range in the blob (board default in force): " + "; ".join(bad)
    return s


def seal(data):
    return bytes(data) + hashlib.sha256(data).digest()[:_CHECK]


def load(backend, defaults):
    """The settings stored in `backend` (None: no backend, the defaults)."""
    if backend is None:
        return Settings(defaults, None, 0, "no MCU-internal storage: board defaults in force")
    try:
        blob = backend.load(BLOB)
    except Exception as e:
        return Settings(defaults, None, 0, "settings cannot be read (%s): board defaults in force"
                        % type(e).__name__)
    if blob is None:
        return Settings(defaults)
    data = bytes(blob[:-_CHECK])
    if len(blob) < _CHECK or hashlib.sha256(data).digest()[:_CHECK] != bytes(blob[-_CHECK:]):
        return Settings(defaults, None, 0, "settings blob damaged (check failed): board defaults in force")
    return unpack(defaults, data)


def save(backend, settings):
    """One atomic blob write (SETTINGS.md section 3)."""
    backend.save(BLOB, seal(settings.pack()))
