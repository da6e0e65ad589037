# The operator's settings commands (MODE.md section 3, SETTINGS.md): each change is range-checked, then
# sealed as an EV_CONSOLE event that names it ("operator set_retention 365"), then stored in the settings
# blob (one write) and put in force. Out of range: bad_payload, nothing sealed as a change, nothing changed.
# Requests are JSON objects (set_time: unix seconds u64); answers are JSON.
import json
import struct

from umeter import app_settings, records
from umeter.console.console import CommandError
from umeter.console.framing import ERR_BAD_PAYLOAD, ERR_INTERNAL, ERR_UNSUPPORTED
from umeter.console.roles import EV_ACTION
from umeter.settings import SettingsError

# the commands whose EV_ACTION event the handler seals itself, once it knows what changes
DEFERRED = ("set_time", "calibration", "set_interval", "set_retention", "set_power_fail", "set_checkpoint")


def _object(payload, keys):
    """The request's JSON object; only `keys` allowed, at least one of them."""
    try:
        obj = json.loads(payload)
    except (ValueError, TypeError):
        raise CommandError(ERR_BAD_PAYLOAD, "a JSON object")
    if not isinstance(obj, dict) or not obj:
        raise CommandError(ERR_BAD_PAYLOAD, "a JSON object with %s" % "/".join(keys))
    for k in obj:
        if k not in keys:
            raise CommandError(ERR_BAD_PAYLOAD, ("unknown key %s" % k)[:64])
    return obj


def _json(obj):
    return json.dumps(obj).encode()


class SettingsCommands:
    """SettingsCommands(meter, seal): seal(command, detail) seals the change event or raises CommandError
    (ERR_INTERNAL) when it cannot: the change is then refused."""

    def __init__(self, meter, seal):
        self.meter = meter
        self._seal = seal

    def command(self, name):
        """The console handler for command `name`: a refused request (bad_payload) is logged too."""
        fn = getattr(self, "_" + name)

        def run(payload):
            try:
                return fn(payload)
            except CommandError as e:
                if e.code == ERR_BAD_PAYLOAD:
                    self._refused(name, e.text)
                raise
        return run

    def _change(self, name, detail, **kw):
        m = self.meter
        try:
            new = m.settings.changed(**kw)
        except SettingsError as e:
            raise CommandError(ERR_BAD_PAYLOAD, str(e)[:64])
        self._seal(name, detail)   # sealed first: a change that cannot be logged does not happen
        try:
            return app_settings.apply(m, new)
        except Exception as e:  # the blob was not written: the settings in force stay as they were
            raise CommandError(ERR_INTERNAL, type(e).__name__)

    def _refused(self, name, why):
        try:  # the attempt goes into the log when it can; the refusal is answered in any case
            self._seal(name, "refused: " + why)
        except CommandError:
            pass

    def _set_time(self, payload):
        """unix seconds u64 -> the new time base: that second at the engine time of now."""
        if len(payload) != 8:
            raise CommandError(ERR_BAD_PAYLOAD, "unix seconds u64")
        unix = struct.unpack(">Q", payload)[0]
        m = self.meter
        new = self._change("set_time", "%d" % unix, time=(unix, m.engine.t, m.src.rate_hz))
        out = new.time_base()
        out["clock_unix_s"] = m.clock()
        return _json(out)

    def _calibration(self, payload):
        """JSON object of engine calibration keys to change (the others stay); empty: read. Answer: the
        calibration in force (stored: it survives a reboot)."""
        eng = self.meter.engine
        if not hasattr(eng, "set_calibration"):
            raise CommandError(ERR_UNSUPPORTED, "calibration is in the metering IC")
        if payload:
            try:
                change = json.loads(payload)
            except (ValueError, TypeError):
                raise CommandError(ERR_BAD_PAYLOAD, "a JSON object")
            if not isinstance(change, dict) or not change:
                raise CommandError(ERR_BAD_PAYLOAD, "a JSON object of calibration keys")
            text = " ".join("%s=%s" % (k, change[k]) for k in sorted(change))
            self._change("calibration", text, calibration=change)
        else:
            self._seal("calibration", "read")
        return _json(eng.calib)

    def _set_interval(self, payload):
        """{"period_min": N}: the load-profile period (1, 5, 10, 15, 30 or 60), from the next boot."""
        p = _object(payload, ("period_min",))["period_min"]
        new = self._change("set_interval", "%s" % (p,), profile_min=p)
        now = app_settings.profile_min_in_force(self.meter)
        return _json({"period_min": new.profile_min, "in_force": now,
                      "applies": "now" if now == new.profile_min else "next boot"})

    def _set_retention(self, payload):
        """{"days": N}: records older than N days are dropped (0: only the ring's own retention)."""
        d = _object(payload, ("days",))["days"]
        new = self._change("set_retention", "%s" % (d,), retention_days=d)
        return _json({"days": new.retention_days, "by_age": "on" if new.retention_days else "off"})

    def _set_power_fail(self, payload):
        """{"enabled": bool, "hold_up_ms": N} (either or both)."""
        obj = _object(payload, ("enabled", "hold_up_ms"))
        text = " ".join("%s=%s" % (k, json.dumps(obj[k])) for k in sorted(obj))
        new = self._change("set_power_fail", text, power_fail=obj.get("enabled"),
                           hold_up_ms=obj.get("hold_up_ms"))
        return _json({"enabled": new.power_fail, "hold_up_ms": new.hold_up_ms,
                      "wired": bool(self.meter.power_fail_wired)})

    def _set_checkpoint(self, payload):
        """Empty: take a checkpoint now (its seq u64). {"interval_s": N}: the checkpoint interval
        (10..3600 s, in force at once)."""
        if not payload:
            self._seal("set_checkpoint", "now")
            seq = self.meter.checkpoint()
            if not seq:
                raise CommandError(ERR_INTERNAL, "checkpoint not stored")
            return struct.pack(">Q", seq)
        n = _object(payload, ("interval_s",))["interval_s"]
        new = self._change("set_checkpoint", "interval_s=%s" % (n,), checkpoint_s=n)
        return _json({"interval_s": new.checkpoint_s})


def sealer_for(meter, actor):
    """seal(command, detail) for SettingsCommands: an EV_CONSOLE record "<role> <command> <detail>",
    the role from actor() (the session's, as the console reported it just before the handler)."""
    def seal(name, detail):
        text = ("%s %s %s" % (actor(), name, detail))[:records.MAX_EVENT_TEXT]
        if not meter.event(records.EV_CONSOLE, EV_ACTION, text):
            raise CommandError(ERR_INTERNAL, "event log unavailable")
    return seal
