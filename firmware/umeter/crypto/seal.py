# Sealed records: AES-256-CTR + HMAC-SHA256 (encrypt-then-MAC), keys by HKDF-SHA256, records chained by
# their tags. Byte layout, labels and rules: SEALED.md next to this file. MicroPython only (cryptolib).
import struct
import hashlib
import cryptolib
import micropython
from umeter.crypto import SealError, TamperError, WrongKeyError, UnknownAlgorithm, KeyMissing  # noqa: F401

FORMAT_VERSION = const(1)
ALG_CTR_HS256_128 = const(1)  # AES-256-CTR, HMAC-SHA256 truncated to 16 bytes (default)
ALG_CTR_HS256_256 = const(2)  # AES-256-CTR, full 32-byte HMAC-SHA256 tag
ALG_DEFAULT = const(1)
FLAG_ANCHOR = const(1)        # the record carries its predecessor's tag (chain can start here)
HEADER_LEN = const(9)         # version, alg, flags, epoch u32, key check u16
KCV_LEN = const(2)
MAX_TAG = const(32)
MAX_OVERHEAD = const(74)      # header + anchor (1 + 32) + 32-byte tag
CTR_CHUNK = const(64)         # keystream bytes per ECB call (4 counter blocks)
SUITES = const(4)             # key suites an Opener keeps (one epoch per boot: never all of them)
_TAGLEN = {1: 16, 2: 32}

_SALT = b"umeter seal v1"
_INFO_ENC = b"umeter seal v1 enc"
_INFO_MAC = b"umeter seal v1 mac"
_INFO_KCV = b"umeter seal v1 kcv"
_ONE = b"\x01"

MODE_NATIVE = "native"  # cryptolib.aes mode 6 (CTR) where the port has it
MODE_VIPER = "viper"    # ECB-encrypted counter blocks, XOR in viper
MODE_PYTHON = "python"  # same keystream, plain-Python XOR (reference twin, benchmark)


def _probe_native_ctr():
    try:
        cryptolib.aes(bytes(32), 6, bytes(16))
        return True
    except (ValueError, OSError):  # unix port: ValueError('mode')
        return False


HAS_NATIVE_CTR = _probe_native_ctr()
DEFAULT_MODE = MODE_NATIVE if HAS_NATIVE_CTR else MODE_VIPER


class Hmac:
    """HMAC-SHA256 (RFC 2104) on hashlib.sha256; MicroPython has no hmac module and no hash copy()."""

    def __init__(self, key):
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        self._ipad = bytearray(64)
        self._opad = bytearray(64)
        for i in range(64):
            b = key[i] if i < len(key) else 0
            self._ipad[i] = b ^ 0x36
            self._opad[i] = b ^ 0x5C

    def start(self):
        return hashlib.sha256(self._ipad)

    def finish(self, inner):
        h = hashlib.sha256(self._opad)
        h.update(inner.digest())
        return h.digest()

    def mac(self, *parts):
        h = self.start()
        for p in parts:
            h.update(p)
        return self.finish(h)

    def __repr__(self):
        return "<Hmac>"


def hkdf_sha256(ikm, salt, info, length=32):
    """RFC 5869 extract-then-expand with SHA-256."""
    if length > 255 * 32:
        raise ValueError("hkdf length")
    prk = Hmac(salt if salt else bytes(32)).mac(ikm)
    ex = Hmac(prk)
    out = bytearray()
    t = b""
    i = 1
    while len(out) < length:
        t = ex.mac(t, info, bytes((i,)))
        out.extend(t)
        i += 1
    return bytes(out[:length])


class _Keys:
    """Derived keys of one (epoch, algorithm): HKDF with the label and b'alg || epoch' as info."""

    def __init__(self, master, epoch, alg):
        if alg not in _TAGLEN:
            raise UnknownAlgorithm("algorithm id %d is not supported" % alg)
        if len(master) != 32:
            raise SealError("device master key must be 32 bytes")
        if not 0 <= epoch <= 0xFFFFFFFF:
            raise SealError("key epoch out of range")
        self.epoch = epoch
        self.alg = alg
        self.taglen = _TAGLEN[alg]
        ex = Hmac(Hmac(_SALT).mac(master))  # one extract, three single-block expands
        ctx = struct.pack(">BI", alg, epoch)
        self.enc = ex.mac(_INFO_ENC, ctx, _ONE)
        self.mac = Hmac(ex.mac(_INFO_MAC, ctx, _ONE))
        self.kcv = ex.mac(_INFO_KCV, ctx, _ONE)[:KCV_LEN]
        self.ecb = None
        self.verified = False  # an Opener verified a record with these keys (KCV mismatch = tamper)

    def __repr__(self):
        return "<keys epoch=%d alg=%d>" % (self.epoch, self.alg)


@micropython.viper
def _ctr_fill_viper(buf: ptr8, iv: ptr8, first: int, nblocks: int):
    # counter blocks first .. first+nblocks-1: the 12-byte nonce prefix iv, then the big-endian index
    i = 0
    while i < nblocks:
        o = i << 4
        j = 0
        while j < 12:
            buf[o + j] = iv[j]
            j += 1
        c = first + i
        buf[o + 12] = (c >> 24) & 0xFF
        buf[o + 13] = (c >> 16) & 0xFF
        buf[o + 14] = (c >> 8) & 0xFF
        buf[o + 15] = c & 0xFF
        i += 1


@micropython.viper
def _xor_viper(dst: ptr8, doff: int, src: ptr8, soff: int, ks: ptr8, n: int):
    i = 0
    while i < n:
        dst[doff + i] = src[soff + i] ^ ks[i]
        i += 1


@micropython.viper
def _copy(dst: ptr8, doff: int, src: ptr8, soff: int, n: int):
    # short copies (tags) without a slice allocation
    i = 0
    while i < n:
        dst[doff + i] = src[soff + i]
        i += 1


@micropython.viper
def _differ(a: ptr8, b: ptr8, boff: int, n: int) -> int:
    # constant-time compare: nonzero if a[:n] != b[boff:boff+n]
    d = 0
    i = 0
    while i < n:
        d |= a[i] ^ b[boff + i]
        i += 1
    return d


@micropython.viper
def _follows(a: ptr8, b: ptr8) -> int:
    # 1 if the 8-byte big-endian b[0:8] == a[0:8] + 1: the gap check on packed seqs, so a 48-bit seq
    # (a heap int on 32-bit ports) never takes part in arithmetic per record
    i = 7
    while i >= 0:
        x = a[i]
        y = b[i]
        if x != 0xFF:
            if y != x + 1:
                return 0
            j = 0
            while j < i:
                if a[j] != b[j]:
                    return 0
                j += 1
            return 1
        if y != 0:
            return 0
        i -= 1
    return 0


def _ctr_fill_python(buf, iv, first, nblocks):
    for i in range(nblocks):
        o = i << 4
        for j in range(12):
            buf[o + j] = iv[j]
        c = first + i
        buf[o + 12] = (c >> 24) & 0xFF
        buf[o + 13] = (c >> 16) & 0xFF
        buf[o + 14] = (c >> 8) & 0xFF
        buf[o + 15] = c & 0xFF


def _xor_python(dst, doff, src, soff, ks, n):
    for i in range(n):
        dst[doff + i] = src[soff + i] ^ ks[i]


def xor_into(dst, doff, src, ks, n, mode=MODE_VIPER):
    """dst[doff:doff+n] = src[:n] ^ ks[:n] (exposed for the viper-vs-plain test)."""
    if mode == MODE_PYTHON:
        _xor_python(dst, doff, src, 0, ks, n)
    else:
        _xor_viper(dst, doff, src, 0, ks, n)


class _Ctr:
    """AES-256-CTR keystream with counter block = epoch u32 || seq u64 || block u32 (all big-endian).
    Without native CTR the keystream is made CTR_CHUNK bytes (4 counter blocks) per ECB call into one
    small buffer, whatever the record size: no per-record allocation, no record-sized buffer."""

    def __init__(self, max_payload, mode):
        if mode is None:
            mode = DEFAULT_MODE
        if mode not in (MODE_NATIVE, MODE_VIPER, MODE_PYTHON):
            raise ValueError("unknown CTR mode")
        if mode == MODE_NATIVE and not HAS_NATIVE_CTR:
            raise SealError("this port's cryptolib has no CTR mode; use the ECB fallback")
        self.mode = mode
        self.max_payload = max_payload
        self.buf = bytearray(16 if mode == MODE_NATIVE else CTR_CHUNK)
        self._iv = bytearray(12)  # epoch || seq: the counter blocks' nonce prefix

    def crypt(self, k, seq, src, dst, doff, n):
        """dst[doff:doff+n] = src[:n] XOR keystream(k, seq)."""
        buf = self.buf
        if self.mode == MODE_NATIVE:
            struct.pack_into(">IQI", buf, 0, k.epoch, seq, 0)
            # mode 6 increments the whole 128-bit block; our block counter never carries into seq
            cryptolib.aes(k.enc, 6, buf).encrypt(src, memoryview(dst)[doff:doff + n])
            return
        struct.pack_into(">IQ", self._iv, 0, k.epoch, seq)
        if k.ecb is None:
            k.ecb = cryptolib.aes(k.enc, 1)
        viper = self.mode == MODE_VIPER
        fill = _ctr_fill_viper if viper else _ctr_fill_python
        xor = _xor_viper if viper else _xor_python
        done = 0
        while done < n:
            fill(buf, self._iv, done >> 4, CTR_CHUNK >> 4)
            k.ecb.encrypt(buf, buf)
            m = n - done
            if m > CTR_CHUNK:
                m = CTR_CHUNK
            xor(dst, doff + done, src, done, buf, m)
            done += m


class _Prefix:
    """Prefix views of one buffer; the last one is kept, so equal lengths in a row allocate nothing."""

    def __init__(self, buf):
        self.buf = buf
        self._mv = memoryview(buf)
        self._n = -1
        self._v = None

    def get(self, n):
        if n != self._n:
            self._v = self._mv[:n]
            self._n = n
        return self._v


def _mac_into(k, cx, body, out, ooff):
    # tag = HMAC(mac key, seq u64 || prevlen u8 || prev tag || record body)[:taglen]; cx and body are
    # views of exactly those bytes
    h = k.mac.start()
    h.update(cx)
    h.update(body)
    _copy(out, ooff, k.mac.finish(h), 0, k.taglen)


def tag_of(record):
    """The tag stored at the end of a sealed record (its chain link), without verifying it."""
    n = len(record)
    if n < HEADER_LEN:
        raise TamperError("record too short (%d bytes)" % n)
    t = _TAGLEN.get(record[1])
    if t is None:
        raise UnknownAlgorithm("algorithm id %d is not supported" % record[1])
    if n < HEADER_LEN + 1 + t:
        raise TamperError("record too short (%d bytes)" % n)
    return bytes(record[n - t:])


class Sealer:
    """Seals payloads into records for journal sequence numbers; keeps the chain (previous tag).

    keyring: any object with master_for(epoch) -> 32 bytes (raises KeyMissing), e.g. the keystore.
    seq passed to seal() must be the sequence number the journal will store the record under, and must
    never have reached the flash before under this epoch (it is the CTR nonce). The sealer refuses a seq
    that is not above every seq it sealed in the current epoch."""

    def __init__(self, keyring, epoch, alg=ALG_DEFAULT, anchor_every=0, max_payload=1024 - MAX_OVERHEAD,
                 ctr=None):
        self._keyring = keyring
        self.max_payload = max_payload
        self._ctr = _Ctr(max_payload, ctr)
        self.mode = self._ctr.mode
        self._buf = bytearray(max_payload + MAX_OVERHEAD)
        self._mv = memoryview(self._buf)
        self._out = _Prefix(self._buf)  # views of the output buffer (the caller's, once it passes one)
        self._cx = bytearray(9 + MAX_TAG)  # seq u64 || prevlen u8 || prev tag: the MAC's chain prefix
        self._cxp = _Prefix(self._cx)
        self.anchor_every = anchor_every
        self._since_anchor = 0
        self._need_anchor = True
        self._keys = None
        self.last_seq = 0
        self._max_seq = 0
        self.rotate(epoch, alg)

    @property
    def epoch(self):
        return self._keys.epoch

    @property
    def alg(self):
        return self._keys.alg

    @property
    def last_tag(self):
        """Tag of the newest record in the chain (b'' before the first record of a new chain)."""
        return bytes(self._cx[9:9 + self._cx[8]])

    def rotate(self, epoch, alg=None):
        """Switch to key epoch `epoch` (never backwards) and/or algorithm; the next record is an anchor."""
        if alg is None:
            alg = self._keys.alg if self._keys else ALG_DEFAULT
        if self._keys is not None:
            if epoch < self._keys.epoch:
                raise SealError("key epoch cannot go backwards (%d -> %d)" % (self._keys.epoch, epoch))
            if epoch == self._keys.epoch and alg == self._keys.alg:
                return
        keys = _Keys(self._keyring.master_for(epoch), epoch, alg)
        if self._keys is None or epoch != self._keys.epoch:
            self._max_seq = 0  # nonce space is per epoch key
        self._keys = keys
        self._need_anchor = True

    def resume(self, last_seq, last_tag):
        """Continue the chain after the newest record on flash (seq, stored tag); None/b'' = new chain.
        The next record is an anchor."""
        tag = last_tag or b""
        if len(tag) > MAX_TAG:
            raise SealError("chain tag too long")
        self._cx[8] = len(tag)
        self._cx[9:9 + len(tag)] = tag
        self.last_seq = last_seq
        self._need_anchor = True

    def overhead(self, anchor=False):
        """Bytes a sealed record adds to its payload (anchor: plus the predecessor's tag)."""
        return HEADER_LEN + self._keys.taglen + ((1 + self._cx[8]) if anchor else 0)

    def seal_into(self, seq, payload, out, anchor=False):
        """Seal payload for journal sequence number seq into out; returns the record length."""
        n = len(payload)
        if not 1 <= n <= self.max_payload:
            raise SealError("payload length %d outside 1..%d" % (n, self.max_payload))
        if not 0 < seq <= 0xFFFFFFFFFFFFFFFF:
            raise SealError("sequence number out of range")
        if seq <= self._max_seq or seq <= self.last_seq:
            raise SealError("seq %d is not above the last sealed seq %d in epoch %d: refusing nonce reuse"
                            % (seq, max(self._max_seq, self.last_seq), self._keys.epoch))
        k = self._keys
        cx = self._cx
        p = cx[8]
        anchor = anchor or self._need_anchor or (
            self.anchor_every > 0 and self._since_anchor + 1 >= self.anchor_every)
        o = HEADER_LEN + ((1 + p) if anchor else 0)
        body = o + n
        if len(out) < body + k.taglen:
            raise SealError("output buffer too small")
        out[0] = FORMAT_VERSION
        out[1] = k.alg
        out[2] = FLAG_ANCHOR if anchor else 0
        struct.pack_into(">I", out, 3, k.epoch)
        out[7] = k.kcv[0]
        out[8] = k.kcv[1]
        if anchor:
            out[HEADER_LEN] = p
            _copy(out, HEADER_LEN + 1, cx, 9, p)
        self._max_seq = seq  # consumed even if the MAC step fails below
        self._ctr.crypt(k, seq, payload, out, o, n)
        struct.pack_into(">Q", cx, 0, seq)
        if self._out.buf is not out:
            self._out = _Prefix(out)
        _mac_into(k, self._cxp.get(9 + p), self._out.get(body), out, body)
        t = k.taglen
        cx[8] = t
        _copy(cx, 9, out, body, t)
        self.last_seq = seq
        self._need_anchor = False
        self._since_anchor = 0 if anchor else self._since_anchor + 1
        return body + t

    def seal(self, seq, payload, anchor=False):
        """Seal payload for journal sequence number seq; returns the record as bytes."""
        n = self.seal_into(seq, payload, self._buf, anchor)
        return bytes(self._mv[:n])


class Opener:
    """Verifies and decrypts records oldest -> newest, checking the chain.

    Trust starts at the first record fed in: an anchor record (it carries its predecessor's tag) is
    verified in full; any other first record cannot be (its predecessor is gone, e.g. ring retention)
    and only its stored tag becomes the chain link for the next record. trust(seq, tag) starts from a
    known (seq, tag) instead, e.g. the device's high-water mark. After a SealError the opener keeps its
    state: call reset() to start trust afresh at the next record.

    Per record, epochs stay in their header bytes and seqs packed in 8 bytes (no int >= 2**30 is made,
    so 32-bit ports allocate no more than 64-bit ones): only the HMAC's hash objects and digests and
    the record's views are allocated."""

    def __init__(self, keyring, max_payload=1024 - MAX_OVERHEAD, ctr=None):
        self._keyring = keyring
        self.max_payload = max_payload
        self._ctr = _Ctr(max_payload, ctr)
        self._buf = bytearray(max_payload)
        self._mv = memoryview(self._buf)
        self._cx = bytearray(9 + MAX_TAG)
        self._cxp = _Prefix(self._cx)
        self._prev = bytearray(8)   # the chain's last seq, packed u64 (gap check)
        self._tag = bytearray(MAX_TAG)
        self._hdr = bytearray(6)    # epoch u32 || alg of the suite in use (as in the record), 1 once set
        self._keys = None
        self._eh = bytearray(4)     # the chain's current key epoch, as stored (big-endian)
        self._suites = {}           # (epoch << 8 | alg) -> keys: at most SUITES (an epoch per boot)
        self.verified = 0
        self.unverified = 0
        self.gaps = 0
        self.last_seq = 0
        self.reset()

    def reset(self):
        """Forget the chain: the next record starts trust again."""
        self._have = False
        self._eh[0] = self._eh[1] = self._eh[2] = self._eh[3] = 0

    def trust(self, seq, tag):
        """Start the chain at a record known good from elsewhere (seq and its stored tag)."""
        if len(tag) > MAX_TAG:
            raise SealError("chain tag too long")
        self._cx[8] = len(tag)
        self._cx[9:9 + len(tag)] = tag
        struct.pack_into(">Q", self._prev, 0, seq)
        self.last_seq = seq
        self._have = True

    @property
    def last_tag(self):
        return bytes(self._cx[9:9 + self._cx[8]]) if self._have else None

    tag_of = staticmethod(tag_of)

    def _suite(self, record):
        # keys for the record's (epoch, alg): the last suite if its header bytes match (no allocation)
        hdr = self._hdr
        if hdr[5] and hdr[4] == record[1] and not _differ(hdr, record, 3, 4):
            return self._keys
        epoch = _epoch_of(record, 3)
        key = (epoch << 8) | record[1]
        k = self._suites.get(key)
        if k is None:
            k = _Keys(self._keyring.master_for(epoch), epoch, record[1])
            if len(self._suites) >= SUITES:
                # chains only move to newer epochs: forget the older suites, keep the current one
                self._suites = {} if self._keys is None else {self._key_of(self._keys): self._keys}
            self._suites[key] = k
        _copy(hdr, 0, record, 3, 4)
        hdr[4] = record[1]
        hdr[5] = 1
        self._keys = k
        return k

    @staticmethod
    def _key_of(k):
        return (k.epoch << 8) | k.alg

    def _check(self, seq, record, out):
        # Verify record `seq` and link it; decrypt into out unless None. Returns the payload length
        # (0 when out is None), or -1 for an unverifiable chain head.
        n = len(record)
        if n < HEADER_LEN:
            raise TamperError("seq %d: record too short (%d bytes)" % (seq, n))
        if record[0] != FORMAT_VERSION:
            raise UnknownAlgorithm("seq %d: format version %d is not supported (newer firmware or damaged)"
                                   % (seq, record[0]))
        alg = record[1]
        t = _TAGLEN.get(alg)
        if t is None:
            raise UnknownAlgorithm("seq %d: algorithm id %d is not supported" % (seq, alg))
        flags = record[2]
        if flags & ~FLAG_ANCHOR:
            raise UnknownAlgorithm("seq %d: unknown flags 0x%02x" % (seq, flags))
        o = HEADER_LEN
        ip = 0
        if flags & FLAG_ANCHOR:
            ip = record[HEADER_LEN]
            if ip > MAX_TAG:
                raise TamperError("seq %d: bad anchor" % seq)
            o += 1 + ip
        body = n - t
        if body <= o:
            raise TamperError("seq %d: record truncated" % seq)
        if body - o > self.max_payload:
            raise SealError("seq %d: payload longer than this opener's max_payload" % seq)
        cx = self._cx
        if self._have:
            if seq <= self.last_seq:
                raise TamperError("seq %d after seq %d: records out of order or replayed"
                                  % (seq, self.last_seq))
            if _epoch_before(record, self._eh):
                raise TamperError("seq %d: key epoch %d after epoch %d"
                                  % (seq, _epoch_of(record, 3), _epoch_of(self._eh, 0)))
            if flags & FLAG_ANCHOR:
                if ip != cx[8] or _differ(self._tag_view(ip), record, HEADER_LEN + 1, ip):
                    raise TamperError("chain broken at seq %d: it does not follow seq %d"
                                      % (seq, self.last_seq))
        k = self._suite(record)
        if record[7] != k.kcv[0] or record[8] != k.kcv[1]:
            if k.verified or (self._have and not _differ(self._eh, record, 3, 4)):
                raise TamperError("seq %d: key check altered" % seq)
            raise WrongKeyError("seq %d (key epoch %d) was sealed with a different key (key check mismatch): "
                                "wrong key, or a damaged record header" % (seq, k.epoch))
        if not self._have and not flags & FLAG_ANCHOR:
            self._link(seq, record, body, t)
            self.unverified += 1
            return -1
        if not self._have:
            cx[8] = ip
            _copy(cx, 9, record, HEADER_LEN + 1, ip)
        struct.pack_into(">Q", cx, 0, seq)
        mv = memoryview(record)
        _mac_into(k, self._cxp.get(9 + cx[8]), mv[:body], self._tag, 0)
        if _differ(self._tag, record, body, t):
            raise TamperError("seq %d: authentication failed (record altered, or its predecessor deleted, "
                              "replaced or reordered)" % seq)
        if self._have and not _follows(self._prev, cx):
            self.gaps += 1
        self._link(seq, record, body, t)
        k.verified = True
        self.verified += 1
        if out is None:
            return 0
        self._ctr.crypt(k, seq, mv[o:body], out, 0, body - o)
        return body - o

    def _tag_view(self, n):
        # the chain's tag as a buffer starting at 0 (for _differ); n bytes of it are compared
        _copy(self._tag, 0, self._cx, 9, n)
        return self._tag

    def _link(self, seq, record, body, t):
        cx = self._cx
        cx[8] = t
        _copy(cx, 9, record, body, t)
        struct.pack_into(">Q", self._prev, 0, seq)
        _copy(self._eh, 0, record, 3, 4)
        self.last_seq = seq
        self._have = True

    def verify(self, seq, record):
        """Check record `seq` and link it into the chain. True: verified. False: chain head that cannot
        be verified (trust starts at its tag). Raises TamperError / WrongKeyError / UnknownAlgorithm."""
        return self._check(seq, record, None) >= 0

    def open_into(self, seq, record, out):
        """verify() then decrypt into out; returns the payload length, or -1 for an unverifiable head."""
        return self._check(seq, record, out)

    def open(self, seq, record):
        """verify() then decrypt: the payload as bytes, or None for an unverifiable chain head."""
        n = self._check(seq, record, self._buf)
        return None if n < 0 else bytes(self._mv[:n])


def _epoch_before(record, eh):
    # key epoch in record[3:7] < eh[0:4], both big-endian, compared in 16-bit halves (small ints)
    a = (record[3] << 8) | record[4]
    b = (eh[0] << 8) | eh[1]
    if a != b:
        return a < b
    return ((record[5] << 8) | record[6]) < ((eh[2] << 8) | eh[3])


def _epoch_of(buf, at):
    # big-endian u32 at buf[at]: off the per-record path (a heap int on 32-bit ports from 2**30 on)
    return (buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]
