"""The meter's side of the operator settings (settings.py, SETTINGS.md): the engine built with them at
boot, a change stored first and then put in force (live, but the load-profile period: next boot), the
wall clock, retention by age after each checkpoint, and what status shows of them."""
from umeter import records
from umeter import settings as S
from umeter.metering.engine import Engine


def load(meter):
    """The stored settings over the board's defaults (no keystore: the defaults and a note)."""
    ks = meter.keystore
    return S.load(ks.backend if ks is not None else None, S.board_defaults(meter.board))


def make_engine(meter):
    """The engine with the settings' profile period and calibration. A board with a metering IC brings its
    own (its calibration lives in the chip, its period in the board's ENGINE). If the engine refuses the
    stored values, the board's are used and status says so: a setting never stops metering."""
    board, src, st = meter.board, meter.src, meter.settings
    make = getattr(board, "engine", None)
    if make is not None:
        return make(src)
    kw = dict(getattr(board, "ENGINE", {}))
    kw["profile_min"] = st.profile_min
    try:
        return Engine.for_source(src, calib=st.calibration, **kw)
    except ValueError as e:
        meter.settings_fault = "the engine refused the stored settings (%s): board defaults in force" % e
        return Engine.for_source(src, calib=getattr(board, "CALIBRATION", None),
                                 **dict(getattr(board, "ENGINE", {})))


def profile_fields(meter):
    """Which optional load-profile fields are stored (the board's PROFILE_FIELDS, RECORDS.md 2.1: data
    minimisation); the energy deltas always are. A bad value stores every field, and status says so."""
    fields = getattr(meter.board, "PROFILE_FIELDS", records.FIELDS_ALL)
    if isinstance(fields, int) and 0 <= fields <= records.FIELDS_ALL:
        return fields
    note = "PROFILE_FIELDS %r is not a mask 0..%d: every field stored" % (fields, records.FIELDS_ALL)
    meter.settings_fault = note if meter.settings_fault is None else meter.settings_fault + "; " + note
    return records.FIELDS_ALL


def profile_min_in_force(meter):
    prof = getattr(meter.engine, "profile", None)
    return getattr(prof, "profile_min", None)


def apply(meter, new):
    """Store `new` (one atomic blob write: SETTINGS.md 3), then put it in force. Raises (nothing changed
    in RAM) when the blob cannot be written. The load-profile period applies from the next boot."""
    ks = meter.keystore
    if ks is None:
        raise OSError("no MCU-internal storage for the settings")
    S.save(ks.backend, new)
    old = meter.settings
    meter.settings = new
    eng = meter.engine
    if new.calibration != old.calibration and hasattr(eng, "set_calibration"):
        eng.set_calibration(new.calibration)
    if new.checkpoint_s != old.checkpoint_s:
        meter.cp_every = new.checkpoint_s * meter.src.rate_hz
        meter._next_cp = eng.t + meter.cp_every
    if new.power_fail and not meter.power_fail_wired:
        meter.power_fail_wired = meter.board.power_fail(meter._power_fail_irq)
    return new


def clock(meter):
    return meter.settings.clock(meter.engine.t, meter.src.rate_hz)


def expire(meter):
    """Retention by age (umeter.retention, imported when first needed): drop the oldest sectors whose
    records are all older than the setting, each drop proven by a retention record. Sectors dropped."""
    days = meter.settings.retention_days
    if days <= 0 or meter.journal is None or meter.sealer is None:
        return 0
    from umeter import retention
    from umeter.crypto.seal import Opener

    keep_t = days * 86400 * meter.src.rate_hz
    return retention.expire(meter.journal, Opener(meter.keystore), meter.engine.t, keep_t)


def status(meter):
    st = meter.settings
    out = st.as_dict()
    rate = meter.src.rate_hz
    out["in_force"] = {"checkpoint_s": meter.cp_every // rate, "profile_min": profile_min_in_force(meter),
                       "profile_fields": meter.profile_fields,
                       "calibration": getattr(meter.engine, "calib", None),
                       "power_fail_wired": meter.power_fail_wired}
    out["pending_until_boot"] = ["profile_min"] if out["in_force"]["profile_min"] != st.profile_min else []
    out["clock_unix_s"] = clock(meter)
    out["last_stop_ms"] = meter.last_stop_ms
    out["retention_by_age"] = "off" if st.retention_days <= 0 else "on"
    if meter.settings_fault:
        out["fault"] = meter.settings_fault
    return out
