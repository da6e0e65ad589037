# Device keystore in MCU-internal storage: master keys by key epoch, the current epoch, the high-water
# mark (with a floor for every energy register) and the tamper log. Secure by default: there is no
# default key; without a provisioned key every key operation raises KeyMissing. Backends
# (keystore_esp32 / keystore_rp2 / keystore_file) store named blobs:
#   backend.load(name) -> bytes or None;  backend.save(name, data) (atomic);  backend.erase(name)
# A damaged entry never stops the meter: it is reported (KeyStore.damage, status) and never used.
import binascii
import hashlib
import struct
from umeter.crypto import KeyMissing  # noqa: F401  (re-exported: hal.keystore.KeyMissing)

MAX_KEYS = 8            # re-keyings kept (old epochs stay readable)
_KEYS = "keys"          # version u8, epoch u32, count u8, count * (first epoch u32, master 32 bytes)
_MARK_V1 = "mark"       # revision 1 mark: seq u64, taglen u8, tag (read once, then replaced by hwm)
_HWM = ("hwm0", "hwm1")  # high-water mark, two alternating copies (KEYSTORE.md)
_TAMPER = ("tamp0", "tamp1")  # tamper log, two alternating copies
_VERSION = 1
_HWM_VERSION = 2
_TAMPER_VERSION = 1
_CHECK = 4              # every blob ends in SHA-256(data)[:4]: a damaged blob is reported, never used
TAMPER_KEEP = 4         # tamper events kept in full (the counter counts all)
MAX_REGISTERS = 8
KEY_ID_PREFIX = b"umeter key id v1"
NOT_PROVISIONED = ("no device key is provisioned: this meter stores no records until a key is installed "
                   "(meterctl keys new, then meterctl provision)")


class KeystoreError(Exception):
    """The keystore itself cannot do what was asked (damaged blob, already provisioned, full)."""


def key_id(master):
    """Public id of a master key (SEALED.md): SHA-256(label || key)[:8] as hex. Never the key."""
    return binascii.hexlify(hashlib.sha256(KEY_ID_PREFIX + bytes(master)).digest()[:8]).decode()


def _seal_blob(data):
    return bytes(data) + hashlib.sha256(data).digest()[:_CHECK]


def _open_blob(name, blob):
    if blob is None:
        return None
    data = blob[:-_CHECK]
    if len(blob) < _CHECK or hashlib.sha256(data).digest()[:_CHECK] != bytes(blob[-_CHECK:]):
        raise KeystoreError("keystore entry %r is damaged" % name)
    return data


class _TwoCopies:
    """One logical entry kept as two blobs, each `generation u32 || data` + check. A write goes to the
    copy not holding the newest generation, so a torn or damaged write leaves the previous value, and one
    damaged copy never loses the entry. load() -> (generation, data) of the newest intact copy, or None
    when neither exists; raises KeystoreError only when copies exist and none is intact."""

    def __init__(self, backend, names):
        self._backend = backend
        self._names = names

    def load(self):
        best = None
        damaged = 0
        for name in self._names:
            try:
                data = _open_blob(name, self._backend.load(name))
            except KeystoreError:
                damaged += 1
                continue
            if data is None:
                continue
            if len(data) < 4:
                damaged += 1
                continue
            gen = struct.unpack_from(">I", data, 0)[0]
            if best is None or gen > best[0]:
                best = (gen, bytes(data[4:]))
        if best is None and damaged:
            raise KeystoreError("keystore entry %r is damaged (both copies)" % self._names[0][:-1])
        return best

    def save(self, data):
        newest = None
        for i, name in enumerate(self._names):
            try:
                blob = _open_blob(name, self._backend.load(name))
            except KeystoreError:
                continue
            if blob is not None and len(blob) >= 4:
                gen = struct.unpack_from(">I", blob, 0)[0]
                if newest is None or gen > newest[0]:
                    newest = (gen, i)
        gen, target = (1, 0) if newest is None else (newest[0] + 1, 1 - newest[1])
        self._backend.save(self._names[target], _seal_blob(struct.pack(">I", gen) + bytes(data)))

    def erase(self):
        for name in self._names:
            self._backend.erase(name)


class HighWater:
    """The high-water mark: the newest durable checkpoint record (seq, seal tag) and, for every energy
    register, a floor in whole mWh (mvarh) that no boot may go below. `epoch` is the key epoch the
    record was sealed under; `position` orders marks: (epoch, seq) only moves forward."""

    def __init__(self, seq, tag, epoch=0, registers=None, generation=0):
        self.seq = seq
        self.tag = bytes(tag)
        self.epoch = epoch
        self.registers = dict(registers or {})
        self.generation = generation

    @property
    def position(self):
        return (self.epoch, self.seq)

    def __repr__(self):
        return "<HighWater seq=%d epoch=%d registers=%d>" % (self.seq, self.epoch, len(self.registers))


def _encode_hwm(m):
    if not 0 <= m.seq < 1 << 64 or not 0 <= m.epoch <= 0xFFFFFFFF or len(m.tag) > 64:
        raise KeystoreError("high-water mark out of range")
    if len(m.registers) > MAX_REGISTERS:
        raise KeystoreError("too many registers for the high-water mark")
    out = bytearray(struct.pack(">BQIB", _HWM_VERSION, m.seq, m.epoch, len(m.tag)))
    out.extend(m.tag)
    out.append(len(m.registers))
    for code in sorted(m.registers):
        value = m.registers[code]
        name = code.encode()
        if not 0 <= value < 1 << 64 or not 0 < len(name) < 16:
            raise KeystoreError("register %s out of range for the high-water mark" % code)
        out.append(len(name))
        out.extend(name)
        out.extend(struct.pack(">Q", value))
    return out


def _decode_hwm(gen, data):
    if len(data) < 14 or data[0] != _HWM_VERSION:
        raise KeystoreError("keystore entry 'hwm' has an unknown layout")
    seq, epoch, taglen = struct.unpack_from(">QIB", data, 1)
    at = 14 + taglen
    tag = data[14:at]
    if len(tag) != taglen or at >= len(data):
        raise KeystoreError("keystore entry 'hwm' is damaged")
    count = data[at]
    at += 1
    regs = {}
    for _ in range(count):
        if at >= len(data):
            raise KeystoreError("keystore entry 'hwm' is damaged")
        n = data[at]
        code = bytes(data[at + 1:at + 1 + n]).decode()
        at += 1 + n
        if at + 8 > len(data):
            raise KeystoreError("keystore entry 'hwm' is damaged")
        regs[code] = struct.unpack_from(">Q", data, at)[0]
        at += 8
    if at != len(data):
        raise KeystoreError("keystore entry 'hwm' is damaged")
    return HighWater(seq, tag, epoch, regs, gen)


class TamperLog:
    """What the MCU remembers of tampering: a lifetime counter that only grows, the count acknowledged by
    the last authenticated reset to the original state, and the newest TAMPER_KEEP events as
    (code, epoch, seq_a, seq_b). `active`: tamper seen since that reset (status shows it at every boot)."""

    def __init__(self, count=0, acked=0, events=(), damaged=False):
        self.count = count
        self.acked = acked
        self.events = list(events)
        self.damaged = damaged

    @property
    def active(self):
        return self.damaged or self.count > self.acked

    def as_dict(self):
        return {"count": self.count, "active": self.active, "damaged": self.damaged,
                "events": [{"code": c, "epoch": e, "seq_a": a, "seq_b": b} for c, e, a, b in self.events]}


class KeyStore:
    """Keys, key epoch, high-water mark and tamper log on top of a blob backend. Doubles as the sealing
    keyring (master_for). Keys are loaded once and kept in RAM; writes go straight to the backend.
    Opening never raises for a damaged entry: `damage` maps the entry to what is wrong and what to do."""

    def __init__(self, backend):
        self._backend = backend
        self._epoch = 0
        self._keys = []  # (first epoch, master) ascending
        self._hwm = _TwoCopies(backend, _HWM)
        self._tamper = _TwoCopies(backend, _TAMPER)
        self.damage = {}
        try:
            data = _open_blob(_KEYS, backend.load(_KEYS))
            if data is not None:
                self._parse(data)
        except KeystoreError as e:
            self.damage["keys"] = ("%s: this meter meters but stores no records; install a key again with "
                                   "meterctl provision (records sealed before stay readable with the old "
                                   "key file)" % e)

    def __repr__(self):
        return "<KeyStore epoch=%d keys=%d>" % (self._epoch, len(self._keys))

    def _parse(self, data):
        if len(data) < 6 or data[0] != _VERSION:
            raise KeystoreError("keystore entry 'keys' has an unknown layout")
        epoch, count = struct.unpack_from(">IB", data, 1)
        if len(data) != 6 + 36 * count or count == 0:
            raise KeystoreError("keystore entry 'keys' is damaged")
        keys = []
        for i in range(count):
            o = 6 + 36 * i
            keys.append((struct.unpack_from(">I", data, o)[0], bytes(data[o + 4:o + 36])))
        self._epoch = epoch
        self._keys = keys

    def _store(self, epoch, keys):
        out = bytearray(struct.pack(">BIB", _VERSION, epoch, len(keys)))
        for first, master in keys:
            out.extend(struct.pack(">I", first))
            out.extend(master)
        self._backend.save(_KEYS, _seal_blob(out))
        self._epoch = epoch
        self._keys = keys
        self.damage.pop("keys", None)

    @property
    def backend(self):
        """The MCU-internal blob backend, for other MCU-internal entries (console role keys, OTA state)."""
        return self._backend

    @property
    def provisioned(self):
        return bool(self._keys)

    def require(self):
        """Raise KeyMissing (with the reason) unless a key is provisioned."""
        if not self._keys:
            raise KeyMissing(self.damage.get("keys") or NOT_PROVISIONED)

    @property
    def epoch(self):
        """The current key epoch (what new records are sealed under)."""
        self.require()
        return self._epoch

    @property
    def last_epoch(self):
        """The highest key epoch ever started (0 before the first key): a re-provision continues above
        it, so no (key epoch, seq) pair can come back."""
        return self._epoch

    def master_for(self, epoch):
        """The master key of key epoch `epoch` (the newest key installed at or before it)."""
        self.require()
        found = None
        for first, master in self._keys:
            if first <= epoch:
                found = master
        if found is None or epoch > self._epoch:
            raise KeyMissing("no device key for key epoch %d" % epoch)
        return found

    def key_id(self, epoch=None):
        return key_id(self.master_for(self._epoch if epoch is None else epoch))

    def provision(self, master, epoch=1):
        """Install the first master key, starting key epoch `epoch`. Refuses if a key is installed
        (use rotate(master) to re-key)."""
        _check_master(master)
        if self._keys:
            raise KeystoreError("a device key is already provisioned (key id %s); use rotate to re-key"
                                % self.key_id())
        if not 0 < epoch <= 0xFFFFFFFF:
            raise KeystoreError("key epoch out of range")
        self._store(epoch, [(epoch, bytes(master))])
        return epoch

    def rotate(self, master=None):
        """Start the next key epoch; with `master`, under a new master key (older epochs keep theirs).
        Returns the new epoch."""
        self.require()
        epoch = self._epoch + 1
        if epoch > 0xFFFFFFFF:
            raise KeystoreError("key epochs exhausted")
        keys = self._keys
        if master is not None:
            _check_master(master)
            if len(keys) >= MAX_KEYS:
                raise KeystoreError("keystore full (%d master keys)" % MAX_KEYS)
            keys = keys + [(epoch, bytes(master))]
        self._store(epoch, keys)
        return epoch

    def erase_keys(self):
        """Only for the reset to the original state: erase the `keys` entry (every master key and the key
        epoch) in one atomic backend erase; repeatable, and an absent or damaged entry is simply gone.
        Returns the highest key epoch this keystore had started (0: none). After it the keystore no
        longer knows that epoch, so the caller notes it in MCU-internal storage first (mode.begin_reset's
        `rstnote`) and a later provision starts above it (mode.next_epoch). The high-water mark and the
        tamper log are not touched."""
        last = self._epoch
        self._backend.erase(_KEYS)
        self._epoch = 0
        self._keys = []
        self.damage.pop("keys", None)
        return last

    # --- high-water mark ------------------------------------------------------------------------------
    def high_water(self):
        """The high-water mark (HighWater), or None before the first checkpoint. Raises KeystoreError
        when it exists but no copy is intact: the caller must treat that as tamper, never as 'fresh'."""
        got = self._hwm.load()
        if got is None:
            return self._mark_v1()
        return _decode_hwm(got[0], got[1])

    def _mark_v1(self):
        data = _open_blob(_MARK_V1, self._backend.load(_MARK_V1))
        if data is None:
            return None
        if len(data) < 9 or len(data) != 9 + data[8]:
            raise KeystoreError("keystore entry 'mark' is damaged")
        return HighWater(struct.unpack_from(">Q", data, 0)[0], bytes(data[9:]))

    def mark(self):
        """The high-water mark as (seq, tag), or None (rollback.check's view)."""
        m = self.high_water()
        return None if m is None else (m.seq, m.tag)

    def advance_mark(self, seq, tag, epoch=0, registers=None):
        """Move the mark to a durable record. It never moves back: a lower (epoch, seq) position or any
        register below its floor raises ValueError and writes nothing. Registers missing from
        `registers` keep their floor."""
        try:
            old = self.high_water()
        except KeystoreError:
            old = None  # both copies damaged: the caller has reported tamper; a fresh mark starts here
        regs = dict(old.registers) if old is not None else {}
        for code, value in (registers or {}).items():
            if value < regs.get(code, 0):
                raise ValueError("high-water mark cannot lower register %s (%d < %d)"
                                 % (code, value, regs[code]))
            regs[code] = value
        new = HighWater(seq, tag, epoch, regs)
        if old is not None:
            if new.position < old.position:
                raise ValueError("high-water mark cannot move back (epoch %d seq %d < epoch %d seq %d)"
                                 % (epoch, seq, old.epoch, old.seq))
            if new.position == old.position and new.tag == old.tag and regs == old.registers:
                return  # unchanged: spare the internal flash a write
        self._hwm.save(_encode_hwm(new))
        self._backend.erase(_MARK_V1)

    def set_mark(self, seq, tag):
        """Revision-1 call (rollback.checkpoint): store (seq, tag) as given, keeping the register floors
        and epoch. It can move the seq back; advance_mark() is the call that never does."""
        try:
            old = self.high_water()
        except KeystoreError:
            old = None
        regs = old.registers if old is not None else {}
        self._hwm.save(_encode_hwm(HighWater(seq, tag, old.epoch if old is not None else 0, regs)))
        self._backend.erase(_MARK_V1)

    def clear_mark(self):
        """Only for the authenticated reset to the original state."""
        self._hwm.erase()
        self._backend.erase(_MARK_V1)

    # --- tamper log -----------------------------------------------------------------------------------
    def tamper_log(self):
        """The tamper log. A damaged log counts as tamper itself (count at least 1, damaged=True)."""
        try:
            got = self._tamper.load()
        except KeystoreError:
            return TamperLog(1, 0, (), damaged=True)
        if got is None:
            return TamperLog()
        data = got[1]
        if len(data) < 10 or data[0] != _TAMPER_VERSION or len(data) != 10 + 21 * data[9]:
            return TamperLog(1, 0, (), damaged=True)
        count, acked = struct.unpack_from(">II", data, 1)
        events = [struct.unpack_from(">BIQQ", data, 10 + 21 * i) for i in range(data[9])]
        return TamperLog(count, acked, events)

    def _save_tamper(self, count, acked, events):
        out = bytearray(struct.pack(">BIIB", _TAMPER_VERSION, count, acked, len(events)))
        for c, e, a, b in events:
            out.extend(struct.pack(">BIQQ", c, e, min(a, (1 << 64) - 1), min(b, (1 << 64) - 1)))
        self._tamper.save(out)

    def record_tamper(self, code, epoch=0, seq_a=0, seq_b=0):
        """Count one tamper verdict and keep it among the newest events. Returns the new count."""
        log = self.tamper_log()
        events = (log.events + [(code & 0xFF, epoch & 0xFFFFFFFF, seq_a, seq_b)])[-TAMPER_KEEP:]
        count = min(log.count + 1, 0xFFFFFFFF)
        self._save_tamper(count, log.acked, events)
        return count

    def acknowledge_tamper(self):
        """Only for the authenticated reset to the original state: the lifetime counter and the events
        stay; tamper is no longer active (a damaged log is rewritten, counted once more)."""
        log = self.tamper_log()
        count = log.count + 1 if log.damaged else log.count
        self._save_tamper(count, count, log.events)


def _check_master(master):
    if not isinstance(master, (bytes, bytearray)) or len(master) != 32:
        raise KeystoreError("a device master key is 32 bytes")
