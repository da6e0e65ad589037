"""`meterctl deploy --drop-slots` and the deploy's slot warning: the OTA slots (firmware/umeter/ota/SLOTS.md)
the boot stage would start instead of the files `meterctl deploy` installed at /.

    st = slot_state(dev)              # dev: an open remote.Remote session
    if st.preferred: warn             # a slot (or the boot stage's safe state) wins over the deploy
    slot_state(dev, drop=True)        # remove them: the deployed app runs at the next boot"""
from meterctl.cli import CliError
from meterctl.remote import RemoteError


# MicroPython, exec'd after a deploy. The boot stage starts a slot, not /, when a slot directory exists
# and an app was ever installed (otherwise slots.NeverInstalled: the development deploy runs). With drop,
# the slot directories go and the boot state's pins (active, previous, trial, pinned digests) are
# cleared, so nothing is bootable there; the counters, pending events and the trust entry (the security
# counter) stay. Prints: S <installed 0/1> <active slot or -> <dropped 0/1> <slot dir>...
SLOTS_CODE = r"""
def _umd_rmtree(p):
    import os
    for e in list(os.ilistdir(p)):
        q = p + '/' + e[0]
        if e[1] & 0x4000:
            _umd_rmtree(q)
        else:
            os.remove(q)
    os.rmdir(p)
def _umd_slots(drop):
    import os, sys
    root = '' if sys.platform == 'linux' else '/'
    dirs = []
    for n in ('slot_a', 'slot_b'):
        try:
            if os.stat(root + n)[0] & 0x4000:
                dirs.append(root + n)
        except OSError:
            pass
    installed = 0
    active = '-'
    st = b = None
    try:
        from umeter.ota import slots, trust
        b = slots.default_backend()
        st = slots.load(b)
        if trust.load(b) is not None and (st.active is not None or st.digests != [None, None]
                                          or st.counts[slots.COUNTERS.index('installed')]):
            installed = 1
            if st.active is not None:
                active = slots.NAMES[st.active]
    except Exception:
        installed = 1  # unreadable update state: the boot stage would not start / either
    if drop and dirs:
        for d in dirs:
            _umd_rmtree(d)
        if st is not None and installed:
            st.active = st.previous = None
            st.trial = False
            st.digests = [None, None]
            slots.save(b, st)
    print('S', installed, active, 1 if drop and dirs else 0, ' '.join(dirs))
"""
SLOTS_CLEANUP = "del _umd_rmtree, _umd_slots\n"


class SlotState:
    """The device's OTA slots after a deploy: dirs (device paths), installed (an app was installed in a
    slot, so the boot stage prefers the slots), active (slot name or None), dropped (removed now)."""

    def __init__(self, dirs, installed, active, dropped):
        self.dirs = dirs
        self.installed = installed
        self.active = active
        self.dropped = dropped

    @property
    def preferred(self):
        """The boot stage will start a slot (or its safe state), not the deployed files."""
        return bool(self.dirs) and self.installed and not self.dropped


def slot_state(dev, drop=False):
    """Look at (and with drop=True remove) the OTA slots on the device behind `dev`."""
    dev.exec(SLOTS_CODE)
    try:
        out = dev.exec("_umd_slots(%r)" % bool(drop), timeout=60)
    finally:
        try:
            dev.exec(SLOTS_CLEANUP)
        except RemoteError:
            pass
    lines = [ln.split() for ln in out.splitlines() if ln.startswith("S ")]
    if len(lines) != 1 or len(lines[0]) < 4:
        raise CliError("the device on %s sent no slot summary" % dev.port)
    words = lines[0]
    return SlotState(words[4:], words[1] == "1", None if words[2] == "-" else words[2], words[3] == "1")
