# The meter's mode (development / production) and the note a reset to the original state leaves, both in
# MCU-internal storage (a keystore blob backend), MODE.md. Read by the boot stage before any app code runs.
# A damaged mode blob counts as production: a fault must never open the REPL.
import hashlib
import struct

from micropython import const

MODE_BLOB = "mode"
NOTE_BLOB = "rstnote"
_VERSION = const(1)
_CHECK = const(4)

DEVELOPMENT = const(0)
PRODUCTION = const(1)
RESETTING = const(2)     # reset to the original state under way: the boot stage finishes it, locked
MODE_NAMES = {DEVELOPMENT: "development", PRODUCTION: "production", RESETTING: "resetting"}
FLAG_UNPROTECTED_OK = const(1)  # production accepted on key storage that is not MCU-internal


class ModeError(Exception):
    """A mode change that is refused (unprotected key storage without the explicit acceptance)."""


def _seal(data):
    return bytes(data) + hashlib.sha256(data).digest()[:_CHECK]


def _open(blob):
    if blob is None:
        return None
    data = bytes(blob[:-_CHECK])
    if len(blob) < _CHECK or hashlib.sha256(data).digest()[:_CHECK] != bytes(blob[-_CHECK:]):
        raise ValueError("damaged")
    return data


class Mode:
    """mode (DEVELOPMENT, PRODUCTION, RESETTING), flags, and `damaged` (the blob failed its check)."""

    def __init__(self, mode=DEVELOPMENT, flags=0, damaged=False):
        self.mode = mode
        self.flags = flags
        self.damaged = damaged

    @property
    def name(self):
        return MODE_NAMES.get(self.mode, "production")

    @property
    def locked(self):
        """The REPL stays closed: production, a reset under way, or a mode that cannot be read."""
        return self.mode != DEVELOPMENT or self.damaged

    @property
    def unprotected_ok(self):
        return bool(self.flags & FLAG_UNPROTECTED_OK)

    def __repr__(self):
        return "<Mode %s%s>" % (self.name, " damaged" if self.damaged else "")


def load(backend):
    """The mode in `backend`. No blob: development (a fresh device). Damaged or unreadable: production."""
    try:
        data = _open(backend.load(MODE_BLOB))
    except Exception:
        return Mode(PRODUCTION, 0, True)
    if data is None:
        return Mode()
    if len(data) != 3 or data[0] != _VERSION or data[1] not in MODE_NAMES:
        return Mode(PRODUCTION, 0, True)
    return Mode(data[1], data[2])


def boot_backend():
    """The keystore's blob backend at this port's fixed place, opened without any board module, for the
    boot stage's first read of the mode (MODE.md section 2): ESP32 NVS namespace `umeter_keys`, RP2040
    `/keystore`, the unix port (virtual board) $UMETER_KEYS_DIR or $UMETER_BOARD_DIR/keys (default
    ./keys). Every board's keystore() uses the same place. None: no keystore directory yet (nothing is
    created here, and no directory holds no mode blob)."""
    import sys
    if sys.platform == "esp32":
        from umeter.hal.keystore_esp32 import NvsBackend
        return NvsBackend()
    import os
    if sys.platform == "rp2":
        from umeter.hal.keystore_rp2 import DIRECTORY as path
    else:
        path = os.getenv("UMETER_KEYS_DIR") or (os.getenv("UMETER_BOARD_DIR") or ".") + "/keys"
    try:
        os.stat(path)
    except OSError:
        return None
    from umeter.hal.keystore_file import FileBackend
    return FileBackend(path)


def boot_load():
    """The mode as the boot stage reads it first. A backend that fails to open counts as damaged
    (locked), like a blob that cannot be read; no keystore directory at all is a new device."""
    try:
        backend = boot_backend()
    except Exception:
        return Mode(PRODUCTION, 0, True)
    return Mode() if backend is None else load(backend)


def protected(board):
    """Is the board's key storage MCU-internal? A board that does not say is treated as unprotected."""
    return getattr(board, "KEY_STORAGE", None) == "internal"


def save(backend, mode, flags=0):
    backend.save(MODE_BLOB, _seal(bytes((_VERSION, mode, flags & 0xFF))))


def set_production(backend, board, accept_unprotected=False):
    """Production mode from the next boot. Refused (ModeError) on unprotected key storage unless accepted."""
    if not protected(board) and not accept_unprotected:
        raise ModeError("key storage %r is not MCU-internal: production mode needs "
                        "--accept-unprotected-keys" % (getattr(board, "KEY_STORAGE", None),))
    save(backend, PRODUCTION, 0 if protected(board) else FLAG_UNPROTECTED_OK)


def set_development(backend):
    backend.erase(MODE_BLOB)


# --- the note a reset to the original state leaves ----------------------------------------------------------
class Note:
    """resets: how many resets to the original state were completed or begun; last_epoch: the highest key
    epoch ever started before the newest one (a new master key starts above it); tamper: the lifetime
    tamper count then."""

    def __init__(self, resets=0, last_epoch=0, tamper=0, damaged=False):
        self.resets = resets
        self.last_epoch = last_epoch
        self.tamper = tamper
        self.damaged = damaged

    def as_dict(self):
        return {"resets": self.resets, "last_epoch": self.last_epoch, "tamper_count": self.tamper,
                "damaged": self.damaged}


def load_note(backend):
    try:
        data = _open(backend.load(NOTE_BLOB))
    except Exception:
        return Note(damaged=True)
    if data is None:
        return Note()
    if len(data) != 13 or data[0] != _VERSION:
        return Note(damaged=True)
    resets, epoch, tamper = struct.unpack_from(">III", data, 1)
    return Note(resets, epoch, tamper)


def save_note(backend, note):
    backend.save(NOTE_BLOB, _seal(struct.pack(">BIII", _VERSION, min(note.resets, 0xFFFFFFFF),
                                              note.last_epoch & 0xFFFFFFFF, min(note.tamper, 0xFFFFFFFF))))


def next_epoch(keystore):
    """The first key epoch for a new master key: above every epoch this MCU ever started (the keystore's,
    and the one a reset to the original state noted before it wiped the keys). Never 1 again."""
    note = load_note(keystore.backend)
    if note.damaged:
        raise ModeError("the reset note is damaged: the next key epoch is unknown; provision with an "
                        "explicit epoch above every one used before")
    return max(keystore.last_epoch, note.last_epoch) + 1


# --- reset to the original state --------------------------------------------------------------------------
def begin_reset(keystore):
    """Step 1 (the admin's command): note the reset, then mode RESETTING. From here on every boot finishes
    the reset before anything else runs, with the REPL closed."""
    backend = keystore.backend
    note = load_note(backend)
    log = keystore.tamper_log()
    epoch = max(keystore.last_epoch, note.last_epoch)
    save_note(backend, Note(note.resets + 1, epoch, log.count))
    save(backend, RESETTING, 0)


def finish_reset(keystore, board):
    """Step 2 (the boot stage, while the mode says RESETTING): wipe role keys, master key, high-water mark,
    acknowledge tamper (the count stays), format the journal and the State, then development mode. Each
    step can be repeated, so a power cut anywhere in it is finished at the next boot. The failure
    counters (authfail) and the OTA state (security counter) are kept. board None (the boot stage's safe
    state: no verified board module): only the keystore steps; the mode stays RESETTING (locked) and
    the next boot with a verified app formats the stores and finishes. True when finished."""
    from umeter.console.rolekeys import KEYS_BLOB
    backend = keystore.backend
    note = load_note(backend)
    if keystore.last_epoch > note.last_epoch:  # a cut between the note and the mode write: note it again
        save_note(backend, Note(note.resets, keystore.last_epoch, note.tamper))
    backend.erase(KEYS_BLOB)
    keystore.erase_keys()   # the master keys and the key epoch (KEYSTORE.md), noted above
    keystore.clear_mark()
    keystore.acknowledge_tamper()
    if board is None:
        return False
    from umeter.store.journal import Journal
    from umeter.store.region import partitions
    from umeter.store.state import State
    parts = partitions(board.flash(), board.PARTITIONS)
    Journal.format(parts["journal"])
    State.format(parts["state"])
    set_development(backend)
    return True
