"""Meter.status(): what an operator needs, at any time (no key material). Split from app.py and
imported on the first status() call, so the boot's heap does not carry it."""
import gc

from umeter import app, app_settings
from umeter.crypto import rollback

STORAGE_NOTES = {
    "internal": "MCU-internal (ESP32 NVS): safe from a clip; against chip readout only with flash "
                "encryption and NVS encryption enabled",
    "external-unprotected": "on the flash chip beside the MCU (RP2040 QSPI): a clip reads and rewrites keys, "
                            "high-water mark and tamper log; not for billing in the field (RP2350: OTP + "
                            "secure boot)",
    "host-file": "files on the host (virtual board): development only",
    "simulated": "simulated: development only",
}


def _software_identity():
    """Version, security counter and manifest SHA-256 of the running slot (WELMEC 7.2), or the note that
    this is an unverified development deploy."""
    from umeter.ota.running import running_slot
    if running_slot() is None:
        return {"mode": "development", "note": "unverified development deploy"}
    from umeter.ota import slots
    try:
        return slots.identity()
    except Exception as e:  # identification never breaks status
        return {"error": "%s: %s" % (type(e).__name__, e)}


def status(m):
    """Everything an operator needs, at any time (no key material)."""
    eng = m.engine
    regs = eng.registers()
    ks = m.keystore
    key = {"provisioned": ks is not None and ks.provisioned}
    if key["provisioned"]:
        key["epoch"] = ks.epoch
        key["key_id"] = ks.key_id()
        key["development"] = bool(getattr(m.board, "DEVELOPMENT_KEY", False))
    if ks is not None and ks.damage:
        key["damage"] = dict(ks.damage)
    if m.keystore_error:
        key["damage"] = {"keystore": m.keystore_error}
    return {
        "software": app.SOFTWARE_ID,
        "mode": "development",  # the production console's status says "production" (console/handlers.py)
        "software_id": _software_identity(),
        "power_fail": m.power_fail_wired,
        "board": m.board.NAME,
        "t_s": eng.t // m.src.rate_hz,
        "windows": eng.windows,
        "registers_wh": dict((code, mwh / 1000.0) for code, mwh in regs.items()),
        "window": eng.status,
        "records_stored": m.stored,
        "records_refused": m.refused,
        "refusal": m.refusal,
        "journal": m.journal.stats() if m.journal is not None else None,
        "state": m.state.stats() if m.state is not None else None,
        "store_error": m.store_error,
        "tamper": _tamper_status(m),
        "tamper_log": m.tamper_log.as_dict() if m.tamper_log is not None else None,
        "mark": _mark_status(m),
        "verification": m.verification,
        "retention_records": m.retained,
        "key": key,
        "key_storage": {"kind": m.key_storage,
                        "note": STORAGE_NOTES.get(m.key_storage, "not declared by the board")},
        "faults": m.faults,
        "last_fault": m.last_fault,
        "restored_from_seq": m.restored_from,
        "settings": app_settings.status(m),
        "last_checkpoint": _last_checkpoint(m),
        "registers_floored": m.floored,
        "mem_free": gc.mem_free(),
    }


def _last_checkpoint(m):
    cp = m.last_checkpoint
    return None if cp is None else {"seq": cp[0], "t_s": cp[1] // m.src.rate_hz}


def _tamper_status(m):
    if m.tamper is not None:
        return m.tamper
    log = m.tamper_log
    if log is None or not log.active:
        return None
    last = log.events[-1] if log.events else (0, 0, 0, 0)
    return {"status": "recorded", "mark_seq": last[2], "flash_seq": last[3],
            "reason": "tamper recorded at an earlier boot (%d in all, last: %s); only the "
                      "authenticated reset to the original state clears it"
                      % (log.count, rollback.CODE_NAMES.get(last[0], "damaged log"))}


def _mark_status(m):
    hw = m.mark
    out = {"error": m.mark_error}
    if hw is not None:
        out["seq"], out["epoch"] = hw.seq, hw.epoch
        out["floors_wh"] = dict((c, mwh / 1000.0) for c, mwh in hw.registers.items())
    return out
