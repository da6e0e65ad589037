"""Host implementation of the sealed-record format (firmware/umeter/crypto/SEALED.md) on `cryptography`.

Written independently of the firmware's seal.py so the known-answer tests compare two implementations.
Used by `meterctl export` (open and verify a chain) and by the tests (seal records for the device).
No exception message contains key material."""
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_VERSION = 1
ALG_CTR_HS256_128 = 1
ALG_CTR_HS256_256 = 2
ALG_DEFAULT = ALG_CTR_HS256_128
TAG_LENGTHS = {ALG_CTR_HS256_128: 16, ALG_CTR_HS256_256: 32}
FLAG_ANCHOR = 1
HEADER_LEN = 9
KCV_LEN = 2
MAX_TAG = 32
MAX_OVERHEAD = HEADER_LEN + 1 + MAX_TAG + MAX_TAG
SALT = b"umeter seal v1"
INFO_ENC = b"umeter seal v1 enc"
INFO_MAC = b"umeter seal v1 mac"
INFO_KCV = b"umeter seal v1 kcv"
KEY_ID_PREFIX = b"umeter key id v1"


class SealError(Exception):
    """A sealed record could not be produced or opened."""


class TamperError(SealError):
    """Modified bytes, or records deleted, reordered, replayed or spliced."""


class WrongKeyError(SealError):
    """The key at hand is not the key that sealed the record."""


class UnknownAlgorithm(SealError):
    """Unknown format version, algorithm id or flag."""


class KeyMissing(SealError):
    """No key for the epoch asked for."""


def key_id(master):
    """Public identifier of a master key: first 8 bytes of SHA-256(label || key), hex."""
    return hashlib.sha256(KEY_ID_PREFIX + bytes(master)).hexdigest()[:16]


def hkdf(master, info, length=32):
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=SALT, info=info).derive(bytes(master))


class EpochKeys:
    """The derived keys of one (epoch, algorithm)."""

    def __init__(self, master, epoch, alg):
        if alg not in TAG_LENGTHS:
            raise UnknownAlgorithm("algorithm id %d is not supported" % alg)
        if len(master) != 32:
            raise SealError("device master key must be 32 bytes")
        if not 0 <= epoch <= 0xFFFFFFFF:
            raise SealError("key epoch out of range")
        ctx = struct.pack(">BI", alg, epoch)
        self.epoch, self.alg, self.taglen = epoch, alg, TAG_LENGTHS[alg]
        self.enc = hkdf(master, INFO_ENC + ctx)
        self.mac = hkdf(master, INFO_MAC + ctx)
        self.kcv = hkdf(master, INFO_KCV + ctx)[:KCV_LEN]

    def __repr__(self):
        return "<EpochKeys epoch=%d alg=%d>" % (self.epoch, self.alg)

    def counter_block(self, seq):
        return struct.pack(">IQI", self.epoch, seq, 0)

    def crypt(self, seq, data):
        enc = Cipher(algorithms.AES(self.enc), modes.CTR(self.counter_block(seq))).encryptor()
        return enc.update(bytes(data)) + enc.finalize()

    def tag(self, seq, prev, body):
        h = c_hmac.HMAC(self.mac, hashes.SHA256())
        h.update(struct.pack(">QB", seq, len(prev)) + bytes(prev) + bytes(body))
        return h.finalize()[:self.taglen]


class Keyring:
    """Master keys by first epoch: master_for(e) is the key with the greatest first epoch <= e.
    Keyring(master) covers every epoch with one key; Keyring({1: k1, 7: k2}) after a re-key at epoch 7."""

    def __init__(self, keys):
        if isinstance(keys, (bytes, bytearray)):
            keys = {0: keys}
        self._keys = sorted((int(e), bytes(k)) for e, k in dict(keys).items())
        for _, k in self._keys:
            if len(k) != 32:
                raise SealError("device master key must be 32 bytes")

    def __repr__(self):
        return "<Keyring %s>" % ", ".join("epoch>=%d id=%s" % (e, key_id(k)) for e, k in self._keys)

    def master_for(self, epoch):
        found = None
        for first, k in self._keys:
            if first <= epoch:
                found = k
        if found is None:
            raise KeyMissing("no key for key epoch %d" % epoch)
        return found


def parse(record):
    """(alg, flags, epoch, kcv, inline prev tag or None, ciphertext offset, body length, tag length)."""
    record = bytes(record)
    n = len(record)
    if n < HEADER_LEN:
        raise TamperError("record too short (%d bytes)" % n)
    if record[0] != FORMAT_VERSION:
        raise UnknownAlgorithm("format version %d is not supported" % record[0])
    alg, flags = record[1], record[2]
    t = TAG_LENGTHS.get(alg)
    if t is None:
        raise UnknownAlgorithm("algorithm id %d is not supported" % alg)
    if flags & ~FLAG_ANCHOR:
        raise UnknownAlgorithm("unknown flags 0x%02x" % flags)
    (epoch,) = struct.unpack_from(">I", record, 3)
    kcv = record[7:9]
    o, prev = HEADER_LEN, None
    if flags & FLAG_ANCHOR:
        p = record[HEADER_LEN]
        if p > MAX_TAG:
            raise TamperError("bad anchor")
        prev = record[HEADER_LEN + 1:HEADER_LEN + 1 + p]
        o += 1 + p
    body = n - t
    if body <= o:
        raise TamperError("record truncated")
    return alg, flags, epoch, kcv, prev, o, body, t


def tag_of(record):
    *_, body, _t = parse(record)
    return bytes(record[body:])


class Sealer:
    """Same contract as the firmware's Sealer: seal(seq, payload, anchor=False) -> record bytes."""

    def __init__(self, keyring, epoch, alg=ALG_DEFAULT, anchor_every=0, max_payload=1024 - MAX_OVERHEAD):
        self.keyring = keyring if hasattr(keyring, "master_for") else Keyring(keyring)
        self.max_payload = max_payload
        self.anchor_every = anchor_every
        self.keys = None
        self.prev = b""
        self.last_seq = 0
        self.max_seq = 0
        self.need_anchor = True
        self.since_anchor = 0
        self.rotate(epoch, alg)

    def rotate(self, epoch, alg=None):
        alg = alg if alg is not None else (self.keys.alg if self.keys else ALG_DEFAULT)
        if self.keys is not None:
            if epoch < self.keys.epoch:
                raise SealError("key epoch cannot go backwards")
            if (epoch, alg) == (self.keys.epoch, self.keys.alg):
                return
            if epoch != self.keys.epoch:
                self.max_seq = 0
        self.keys = EpochKeys(self.keyring.master_for(epoch), epoch, alg)
        self.need_anchor = True

    def resume(self, last_seq, last_tag):
        self.prev = bytes(last_tag or b"")
        self.last_seq = last_seq
        self.need_anchor = True

    @property
    def last_tag(self):
        return self.prev

    def seal(self, seq, payload, anchor=False):
        payload = bytes(payload)
        if not 1 <= len(payload) <= self.max_payload:
            raise SealError("payload length %d outside 1..%d" % (len(payload), self.max_payload))
        if seq <= max(self.max_seq, self.last_seq):
            raise SealError("seq %d reuses a nonce" % seq)
        k = self.keys
        anchor = anchor or self.need_anchor or (
            self.anchor_every > 0 and self.since_anchor + 1 >= self.anchor_every)
        head = struct.pack(">BBBI", FORMAT_VERSION, k.alg, FLAG_ANCHOR if anchor else 0, k.epoch) + k.kcv
        if anchor:
            head += bytes((len(self.prev),)) + self.prev
        body = head + k.crypt(seq, payload)
        tag = k.tag(seq, self.prev, body)
        self.max_seq = self.last_seq = seq
        self.prev = tag
        self.need_anchor = False
        self.since_anchor = 0 if anchor else self.since_anchor + 1
        return body + tag


class Opener:
    """Same contract as the firmware's Opener: open(seq, record) -> payload, or None for a chain head
    that cannot be verified (trust starts at its tag); raises SealError subclasses."""

    def __init__(self, keyring):
        self.keyring = keyring if hasattr(keyring, "master_for") else Keyring(keyring)
        self.suites = {}
        self.ok_epochs = set()
        self.verified = self.unverified = self.gaps = 0
        self.last_seq = 0
        self.prev = None
        self.epoch = 0

    def reset(self):
        self.prev = None
        self.epoch = 0

    def trust(self, seq, tag):
        self.prev = bytes(tag)
        self.last_seq = seq

    @property
    def last_tag(self):
        return self.prev

    tag_of = staticmethod(tag_of)

    def _suite(self, epoch, alg):
        if (epoch, alg) not in self.suites:
            self.suites[epoch, alg] = EpochKeys(self.keyring.master_for(epoch), epoch, alg)
        return self.suites[epoch, alg]

    def _check(self, seq, record):
        record = bytes(record)
        alg, flags, epoch, kcv, inline, o, body, t = parse(record)
        if self.prev is not None:
            if seq <= self.last_seq:
                raise TamperError("seq %d after seq %d: records out of order or replayed"
                                  % (seq, self.last_seq))
            if epoch < self.epoch:
                raise TamperError("seq %d: key epoch %d after epoch %d" % (seq, epoch, self.epoch))
            if inline is not None and inline != self.prev:
                raise TamperError("chain broken at seq %d: it does not follow seq %d" % (seq, self.last_seq))
        k = self._suite(epoch, alg)
        if kcv != k.kcv:
            if epoch in self.ok_epochs:
                raise TamperError("seq %d: key check altered" % seq)
            raise WrongKeyError("seq %d (key epoch %d) was sealed with a different key (key check mismatch): "
                                "wrong key, or a damaged record header" % (seq, epoch))
        if self.prev is None and inline is None:
            self._link(seq, epoch, record[body:])
            self.unverified += 1
            return None
        prev = self.prev if self.prev is not None else inline
        if not hmac.compare_digest(k.tag(seq, prev, record[:body]), record[body:]):
            raise TamperError("seq %d: authentication failed (record altered, or its predecessor deleted, "
                              "replaced or reordered)" % seq)
        if self.prev is not None and seq != self.last_seq + 1:
            self.gaps += 1
        self._link(seq, epoch, record[body:])
        self.ok_epochs.add(epoch)
        self.verified += 1
        return k, record[o:body]

    def _link(self, seq, epoch, tag):
        self.prev, self.last_seq, self.epoch = bytes(tag), seq, epoch

    def verify(self, seq, record):
        return self._check(seq, record) is not None

    def open(self, seq, record):
        r = self._check(seq, record)
        if r is None:
            return None
        k, ct = r
        return k.crypt(seq, ct)


def open_chain(keyring, records, resync=True):
    """Open (seq, record) pairs oldest -> newest. Returns (opened, problems, opener): opened lists
    (seq, payload) of verified records; problems lists (seq, SealError). With resync, after a problem
    trust restarts at that same record (an anchor verifies on its own; a plain record becomes the new
    chain link), so every break is reported once; without resync the first problem raises."""
    op = Opener(keyring)
    opened, problems = [], []
    for seq, rec in records:
        try:
            payload = op.open(seq, rec)
        except SealError as e:
            if not resync:
                raise
            problems.append((seq, e))
            op.reset()
            try:
                payload = op.open(seq, rec)
            except SealError:
                op.reset()
                continue
        if payload is not None:
            opened.append((seq, payload))
    return opened, problems, op
