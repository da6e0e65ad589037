# A/B app slots, boot state, trial boot, rollback, confirmation and the update event queue (SLOTS.md).
# Slots are two directories on the MCU's internal filesystem (root + "slot_a" / "slot_b"), each holding
# the app files and MANIFEST (the bundle's header + manifest + signature block). The boot state, the
# counters and the pending events are one blob in MCU-internal storage (a keystore backend), so every
# state change and the event that tells of it are written by one atomic save.
import hashlib
import os
import sys

from umeter.ota import bundle
from umeter.ota import trust as trustmod
from umeter.ota.running import NAMES, running_slot  # noqa: F401 (part of this module's interface)
from umeter.ota.verify import Refused, installed

BLOB = "otaboot"
VERSION = 1
MANIFEST = "MANIFEST"
PENDING = "MANIFEST.new"    # the head of a bundle being installed (kept for resume)
EXTERNAL = ("firmware.bin",)  # FILEs kept outside the slot: the ESP32 image (OTA partition, secure boot)
DEFAULT_ATTEMPTS = 3        # trial boots before an unconfirmed app is rolled back
MAX_EVENTS = 7             # with MAX_TEXT, the entry stays under 470 bytes (ESP32 backend buffer: 512)
MAX_TEXT = 40
_CHECK = 4
_FLAG_TRIAL = 1
_FLAG_TRUST_PENDING = 2

EV_ATTEMPT, EV_INSTALLED, EV_CONFIRMED, EV_REJECTED, EV_ROLLBACK, EV_TAMPER, EV_BOOT_FAILED, EV_NO_APP = \
    1, 2, 3, 4, 5, 6, 7, 8
EVENT_NAMES = ("", "attempt", "installed", "confirmed", "rejected", "rollback", "tamper", "boot_failed",
               "no_app")
# counters (status): install attempts, installs into trial, confirmed, rejected, rollbacks, tamper, failed
COUNTERS = ("attempts", "installed", "confirmed", "rejected", "rollbacks", "tamper", "boot_failed")
_COUNTER_OF = (None, 0, 1, 2, 3, 4, 5, 6, 4)   # event code -> counter index (no_app counts as rollback)


class BootStateError(Exception):
    """The boot state entry is damaged or of an unknown version (reported, never reset)."""


class NoApp(Exception):
    """Neither slot holds an app the boot stage may start; str() says why."""


class NeverInstalled(NoApp):
    """No signed app was ever installed (slots absent, or only an interrupted first install)."""


def default_root():
    # The unix port's VfsPosix mounted with a root ignores renames of absolute paths: stay relative there.
    return "" if sys.platform == "linux" else "/"


def default_backend():
    """Where the update state lives on this port: ESP32 NVS, else a directory on the internal fs."""
    if sys.platform == "esp32":
        from umeter.hal.keystore_esp32 import NvsBackend
        return NvsBackend("umeter_ota")
    from umeter.hal.keystore_file import FileBackend
    return FileBackend(default_root() + "ota")


def slot_dir(root, index):
    return root + "slot_" + NAMES[index]


class BootState:
    """active / previous: slot index 0 or 1, or None; digests: the pinned SHA-256(manifest) per slot
    (None: nothing bootable there); events: [(seq, code, slot, arg, text)]."""

    def __init__(self):
        self.active = None
        self.previous = None
        self.trial = False
        self.trust_pending = False
        self.attempts_left = 0
        self.max_attempts = DEFAULT_ATTEMPTS
        self.digests = [None, None]
        self.counts = [0] * len(COUNTERS)
        self.next_seq = 1
        self.events = []

    def event(self, code, slot=None, arg=0, text=""):
        """Queue an event and count it (saved with the next save())."""
        text = "".join(c if " " <= c <= "~" else "?" for c in str(text)[:MAX_TEXT])
        self.events.append((self.next_seq, code, 255 if slot is None else slot, arg & 0xFFFFFFFF, text))
        self.next_seq += 1
        while len(self.events) > MAX_EVENTS:
            self.events.pop(0)  # the counters keep the whole history
        i = _COUNTER_OF[code]
        if i is not None:
            self.counts[i] += 1


def _slot_byte(i):
    return 0 if i is None else i + 1


def _slot_of(b):
    if b > 2:
        raise BootStateError("boot state names slot %d" % b)
    return None if b == 0 else b - 1


def encode(st):
    out = bytearray((VERSION, _slot_byte(st.active), _slot_byte(st.previous),
                     (_FLAG_TRIAL if st.trial else 0) | (_FLAG_TRUST_PENDING if st.trust_pending else 0),
                     st.attempts_left, st.max_attempts))
    for d in st.digests:
        out += d if d is not None else bytes(32)
    for c in st.counts:
        out += (c & 0xFFFFFFFF).to_bytes(4, "big")
    out += (st.next_seq & 0xFFFFFFFF).to_bytes(4, "big") + bytes((len(st.events),))
    for seq, code, slot, arg, text in st.events:
        raw = text.encode()
        out += seq.to_bytes(4, "big") + bytes((code, slot)) + arg.to_bytes(4, "big")
        out += bytes((len(raw),)) + raw
    return bytes(out) + hashlib.sha256(out).digest()[:_CHECK]


def decode(blob):
    if len(blob) < 6 + _CHECK or hashlib.sha256(blob[:-_CHECK]).digest()[:_CHECK] != bytes(blob[-_CHECK:]):
        raise BootStateError("boot state entry %r is damaged" % BLOB)
    d = memoryview(blob)[:-_CHECK]
    if d[0] != VERSION:
        raise BootStateError("boot state entry %r has unknown version %d" % (BLOB, d[0]))
    st = BootState()
    try:
        st.active, st.previous = _slot_of(d[1]), _slot_of(d[2])
        st.trial, st.trust_pending = bool(d[3] & _FLAG_TRIAL), bool(d[3] & _FLAG_TRUST_PENDING)
        st.attempts_left, st.max_attempts = d[4], d[5]
        at = 6
        for i in range(2):
            raw = bytes(d[at:at + 32])
            st.digests[i] = None if raw == bytes(32) else raw
            at += 32
        for i in range(len(COUNTERS)):
            st.counts[i] = bundle._u(d, at, 4)
            at += 4
        st.next_seq = bundle._u(d, at, 4)
        n = d[at + 4]
        at += 5
        for _ in range(n):
            tl = d[at + 10]
            st.events.append((bundle._u(d, at, 4), d[at + 4], d[at + 5], bundle._u(d, at + 6, 4),
                              bytes(d[at + 11:at + 11 + tl]).decode()))
            at += 11 + tl
    except (IndexError, UnicodeError):
        raise BootStateError("boot state entry %r has a bad layout" % BLOB)
    if at != len(d) or d[3] & ~3:
        raise BootStateError("boot state entry %r has a bad layout" % BLOB)
    return st


def load(backend):
    """The BootState; a fresh one when none was ever saved; BootStateError when damaged."""
    blob = backend.load(BLOB)
    return BootState() if blob is None else decode(bytes(blob))


def save(backend, st):
    backend.save(BLOB, encode(st))


# -- slot contents --------------------------------------------------------------------------------------

def read_head(path):
    """(manifest bytes, sigblock bytes) of a MANIFEST file, read with bounded memory."""
    with open(path, "rb") as f:
        m_len, s_len = bundle.parse_header(f.read(bundle.HEADER_LEN))
        manifest = f.read(m_len)
        sigblock = f.read(s_len)
        if len(manifest) != m_len or len(sigblock) != s_len or f.read(1):
            raise bundle.BundleError("%s: length does not match its header" % path)
    return manifest, sigblock


def entries(d):
    """[(name, is_dir)] of a directory (os.ilistdir on MicroPython; listdir + stat under CPython)."""
    if hasattr(os, "ilistdir"):
        return [(e[0], bool(e[1] & 0x4000)) for e in os.ilistdir(d)]
    return [(n, bool(os.stat(d + "/" + n)[0] & 0x4000)) for n in os.listdir(d)]


def _walk(d, rel, out):
    for name, is_dir in entries(d):
        if is_dir:
            _walk(d + "/" + name, rel + name + "/", out)
        else:
            out.append(rel + name)


def hash_file(path, buf):
    h = hashlib.sha256()
    mv = memoryview(buf)
    n_total = 0
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
            n_total += n
    return n_total, h.digest()


def check_files(d, manifest, buf, ignore=(MANIFEST,)):
    """Raise Refused unless the directory holds exactly the manifest's files (and the names in `ignore`),
    each of its size and hash."""
    present = []
    try:
        _walk(d, "", present)
    except OSError:
        raise Refused("slot directory %s is missing" % d)
    listed = {}
    for path, size, digest in manifest.files:
        listed[path] = True
        if path in EXTERNAL:
            continue
        try:
            n, got = hash_file(d + "/" + path, buf)
        except OSError:
            raise Refused("file %s is missing" % path)
        if n != size or got != digest:
            raise Refused("file %s was changed (size %d, manifest %d)" % (path, n, size))
    for path in present:
        if path not in listed and path not in ignore:
            raise Refused("file %s is not in the manifest" % path)


def check_slot(root, index, trust, st, buf):
    """The Manifest of a slot the boot stage may start (signature, pinned digest, every file's hash)."""
    if st.digests[index] is None:
        raise Refused("slot %s holds no installed app" % NAMES[index])
    d = slot_dir(root, index)
    try:
        manifest_bytes, sigblock = read_head(d + "/" + MANIFEST)
    except (OSError, bundle.BundleError) as e:
        raise Refused("slot %s manifest unreadable (%s)" % (NAMES[index], e))
    if hashlib.sha256(manifest_bytes).digest() != st.digests[index]:
        raise Refused("slot %s manifest is not the one installed" % NAMES[index])
    m = installed(trust, manifest_bytes, sigblock)
    check_files(d, m, buf)
    return m, manifest_bytes


# -- the boot stage's decisions -------------------------------------------------------------------------

def _finish_trust(root, backend, trust, st, buf):
    """Complete a confirmation cut short between the boot-state and the trust write (idempotent)."""
    manifest_bytes, _ = read_head(slot_dir(root, st.active) + "/" + MANIFEST)
    new = trustmod.applied(trust, bundle.parse_manifest(manifest_bytes))
    trustmod.save(backend, new, trust)
    st.trust_pending = False
    save(backend, st)
    return new


def select(root, backend, buf=None):
    """Pick and verify the slot to boot. Returns (slot index, Manifest, manifest bytes); raises NoApp.
    Counts a trial boot before the app is imported, so a crash at import uses up an attempt."""
    buf = buf or bytearray(1024)
    try:
        trust = trustmod.load(backend)
        st = load(backend)
    except (trustmod.TrustError, BootStateError) as e:
        raise NoApp(str(e))
    if trust is None:
        raise NeverInstalled("the update trust store is not provisioned")
    if st.active is None and st.digests == [None, None] and st.counts[COUNTERS.index("installed")] == 0:
        raise NeverInstalled("no app was ever installed in a slot")
    if st.active is None:
        raise NoApp("no app installed in a slot")
    if st.trust_pending:
        trust = _finish_trust(root, backend, trust, st, buf)
    if st.trial:
        if st.attempts_left == 0:
            failed = st.active
            st.active, st.previous, st.trial = st.previous, None, False
            st.digests[failed] = None
            st.event(EV_ROLLBACK, failed, 0, "not confirmed after %d boots" % st.max_attempts)
            save(backend, st)
            if st.active is None:
                raise NoApp("the trial app was not confirmed and there is no previous app")
        else:
            st.attempts_left -= 1
            save(backend, st)
    try:
        m, mb = check_slot(root, st.active, trust, st, buf)
        return st.active, m, mb
    except Refused as e:
        reason = str(e)
    bad = st.active
    other = st.previous if st.previous is not None else 1 - bad
    try:
        m, mb = check_slot(root, other, trust, st, buf)
    except Refused as e2:
        st.event(EV_NO_APP, bad, 0, reason)
        save(backend, st)
        raise NoApp("slot %s: %s; slot %s: %s" % (NAMES[bad], reason, NAMES[other], e2))
    st.active, st.previous, st.trial = other, None, False
    st.digests[bad] = None
    st.event(EV_TAMPER, bad, 0, reason)
    save(backend, st)
    return other, m, mb


def boot_failed(backend, index, text):
    """The boot stage caught an exception while starting slot `index`'s app."""
    st = load(backend)
    st.event(EV_BOOT_FAILED, index, st.attempts_left, text)
    save(backend, st)




def confirm(root=None, backend=None):
    """The app's health checks passed: end the trial, keep the previous slot as the fallback, then apply
    the manifest's security counter, clock floor, policy and key changes. True when a trial ended, False
    when there was nothing to confirm (not in trial, or not started from a slot)."""
    root = default_root() if root is None else root
    backend = backend or default_backend()
    st = load(backend)
    if not st.trial or st.active is None or (running_slot() not in (None, st.active)):
        return False
    st.trial, st.trust_pending, st.attempts_left = False, True, 0
    st.event(EV_CONFIRMED, st.active)
    save(backend, st)
    _finish_trust(root, backend, trustmod.load(backend), st, None)
    return True


def pending_events(backend=None):
    """[(seq, name, slot name or None, arg, text)] not yet acknowledged, oldest first."""
    st = load(backend or default_backend())
    return [(seq, EVENT_NAMES[code], NAMES[slot] if slot < 2 else None, arg, text)
            for seq, code, slot, arg, text in st.events]


def ack_events(upto_seq, backend=None):
    """Drop the pending events with seq <= upto_seq (the app sealed them into the journal)."""
    backend = backend or default_backend()
    st = load(backend)
    keep = [e for e in st.events if e[0] > upto_seq]
    if len(keep) != len(st.events):
        st.events = keep
        save(backend, st)


def identity(root=None, backend=None):
    """Software identification (WELMEC 7.2): what `meterctl id` and the status show."""
    root = default_root() if root is None else root
    backend = backend or default_backend()
    slot = running_slot()
    info = {"mode": "slot" if slot is not None else "development", "slot": None, "version": None,
            "software_id": None, "security_counter": None, "trial": False}
    try:
        t = trustmod.load(backend)
        st = load(backend)
    except (trustmod.TrustError, BootStateError) as e:
        info["error"] = str(e)
        return info
    info["security_counter"] = t.counter if t is not None else None
    if t is not None:
        info["policy"] = bundle.POLICY_NAMES[t.policy]
        info["policy_floor"] = bundle.POLICY_NAMES[t.floor]
    info["counts"] = dict(zip(COUNTERS, st.counts))
    if slot is None:
        info["note"] = "unverified development deploy"
        return info
    manifest_bytes, _ = read_head(slot_dir(root, slot) + "/" + MANIFEST)
    m = bundle.parse_manifest(manifest_bytes)
    info.update({"slot": NAMES[slot], "version": m.version, "software_id": bundle.software_id(manifest_bytes),
                 "manifest_counter": m.counter, "trial": st.trial and st.active == slot,
                 "attempts_left": st.attempts_left})
    return info
