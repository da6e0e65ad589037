"""The app's end of a signed update's trial boot (ota/SLOTS.md section 6), split from app.py and
imported once per boot, at the first healthy checkpoint."""
import sys

from umeter import records


def confirm_update(m):
    """Health checks passed (stores mounted, sampling running, a window computed, a checkpoint sealed):
    end a signed update's trial boot and seal the update events the boot stage queued. Only for an app
    started from a verified slot; a development deploy has none."""
    if m.store_error is not None or m.refusal is not None:
        return
    from umeter.ota.running import running_slot
    if running_slot() is None:
        return
    import umeter.ota as package
    from umeter.ota import slots
    try:
        _confirm(m, slots)
    finally:
        # Once per boot: the slot machinery's heap (about 9 KB on a 32-bit port) goes back to the app; an
        # OTA command or status imports it again when it needs it.
        for name in ("slots", "verify", "trust", "bundle"):
            sys.modules.pop("umeter.ota." + name, None)
            if hasattr(package, name):
                delattr(package, name)


def _confirm(m, slots):
    m._guard(slots.confirm)
    last = 0
    for seq, name, slot, arg, text in m._guard(slots.pending_events) or []:
        if not m.event(records.EV_OTA, seq, "%s %s %s %s" % (name, slot or "-", arg, text)):
            break  # not sealed: it stays queued for the next boot
        last = seq
    if last:
        m._guard(slots.ack_events, last)  # only once they are sealed in the journal
