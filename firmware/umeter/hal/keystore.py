# Device keystore in MCU-internal storage: master keys by key epoch, the current epoch, and the rollback
# high-water mark. Secure by default: there is no default key; without a provisioned key every key
# operation raises KeyMissing. Backends (keystore_esp32 / keystore_rp2 / keystore_file) store named blobs:
#   backend.load(name) -> bytes or None;  backend.save(name, data) (atomic);  backend.erase(name)
import binascii
import hashlib
import struct
from umeter.crypto import KeyMissing  # noqa: F401  (re-exported: hal.keystore.KeyMissing)

MAX_KEYS = 8            # re-keyings kept (old epochs stay readable)
_KEYS = "keys"          # version u8, epoch u32, count u8, count * (first epoch u32, master 32 bytes)
_MARK = "mark"          # seq u64, taglen u8, tag
_VERSION = 1
_CHECK = 4              # every blob ends in SHA-256(data)[:4]: a damaged blob is reported, never used
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


class KeyStore:
    """Keys, key epoch and high-water mark on top of a blob backend. Doubles as the sealing keyring
    (master_for). Keys are loaded once and kept in RAM; writes go straight to the backend."""

    def __init__(self, backend):
        self._backend = backend
        self._epoch = 0
        self._keys = []  # (first epoch, master) ascending
        data = _open_blob(_KEYS, backend.load(_KEYS))
        if data is not None:
            self._parse(data)

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

    @property
    def provisioned(self):
        return bool(self._keys)

    def require(self):
        """Raise KeyMissing (with the reason) unless a key is provisioned."""
        if not self._keys:
            raise KeyMissing(NOT_PROVISIONED)

    @property
    def epoch(self):
        """The current key epoch (what new records are sealed under)."""
        self.require()
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

    def mark(self):
        """The high-water mark (seq, tag), or None."""
        data = _open_blob(_MARK, self._backend.load(_MARK))
        if data is None:
            return None
        if len(data) < 9 or len(data) != 9 + data[8]:
            raise KeystoreError("keystore entry 'mark' is damaged")
        return struct.unpack_from(">Q", data, 0)[0], bytes(data[9:])

    def set_mark(self, seq, tag):
        if len(tag) > 64:
            raise KeystoreError("mark tag too long")
        self._backend.save(_MARK, _seal_blob(struct.pack(">QB", seq, len(tag)) + bytes(tag)))

    def clear_mark(self):
        self._backend.erase(_MARK)


def _check_master(master):
    if not isinstance(master, (bytes, bytearray)) or len(master) != 32:
        raise KeystoreError("a device master key is 32 bytes")
