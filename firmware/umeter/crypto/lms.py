# LMS signature verification (RFC 8554), verify only, SHA-256 with n = m = 32: LMS_SHA256_M32_H5..H25 with
# LMOTS_SHA256_N32_W1..W8. Single tree (what CNSA 2.0 approves) through verify(); verify_hss() takes the
# RFC's HSS encoding (L = 1..8) by verifying each level's LMS signature in turn. Streams every hash through
# hashlib.sha256 (all ports have it, hardware-backed on ESP32), keeps no list of hashes, and reuses one
# 55-byte buffer for the Winternitz chains. See SIGNATURES.md.
import hashlib
import struct

# RFC 8554 section 8.1 type codes
LMOTS_SHA256_N32_W1 = 1
LMOTS_SHA256_N32_W2 = 2
LMOTS_SHA256_N32_W4 = 3
LMOTS_SHA256_N32_W8 = 4
LMS_SHA256_M32_H5 = 5
LMS_SHA256_M32_H10 = 6
LMS_SHA256_M32_H15 = 7
LMS_SHA256_M32_H20 = 8
LMS_SHA256_M32_H25 = 9
DEFAULT_LMS_TYPE = LMS_SHA256_M32_H10
DEFAULT_OTS_TYPE = LMOTS_SHA256_N32_W4

N = 32                       # n = m = 32: hash output bytes
PUBLIC_KEY_SIZE = 24 + N     # u32 type || u32 otstype || I (16) || T[1]
HSS_PUBLIC_KEY_SIZE = 4 + PUBLIC_KEY_SIZE
MAX_HSS_LEVELS = 8

_OTS = {  # type: (w, p, ls), RFC 8554 Table 1
    LMOTS_SHA256_N32_W1: (1, 265, 7),
    LMOTS_SHA256_N32_W2: (2, 133, 6),
    LMOTS_SHA256_N32_W4: (4, 67, 4),
    LMOTS_SHA256_N32_W8: (8, 34, 0),
}
_HEIGHT = {LMS_SHA256_M32_H5: 5, LMS_SHA256_M32_H10: 10, LMS_SHA256_M32_H15: 15,
           LMS_SHA256_M32_H20: 20, LMS_SHA256_M32_H25: 25}

D_PBLC = b"\x80\x80"
D_MESG = b"\x81\x81"
D_LEAF = b"\x82\x82"
D_INTR = b"\x83\x83"


def ots_signature_size(ots_type):
    return 4 + N + _OTS[ots_type][1] * N        # u32 type || C || y[0..p-1]


def signature_size(lms_type, ots_type):
    """Bytes of an LMS signature: u32 q || LM-OTS signature || u32 type || path (h nodes)."""
    return 4 + ots_signature_size(ots_type) + 4 + _HEIGHT[lms_type] * N


DEFAULT_SIGNATURE_SIZE = signature_size(DEFAULT_LMS_TYPE, DEFAULT_OTS_TYPE)  # 2,508 bytes


def _type_at(buf, off):
    # a u32 type code; anything above 255 is no code we know (and keeps ints small on 32-bit ports)
    if len(buf) < off + 4 or buf[off] or buf[off + 1] or buf[off + 2]:
        return -1
    return buf[off + 3]


def public_key_info(public_key):
    """(lms_type, ots_type) of an LMS public key; ValueError if it is not one this module verifies."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError("LMS public key must be %d bytes" % PUBLIC_KEY_SIZE)
    lms_type, ots_type = _type_at(public_key, 0), _type_at(public_key, 4)
    if lms_type not in _HEIGHT or ots_type not in _OTS:
        raise ValueError("unsupported LMS/LM-OTS type %d/%d" % (lms_type, ots_type))
    return lms_type, ots_type


def _blocks(n):
    return (n + 72) // 64  # SHA-256 compressions for an n-byte input (0x80, zeros, 64-bit length)


def _coef(digits, i, w):
    # RFC 8554 section 3.1.3: the i-th w-bit digit of digits, most significant first
    per_byte = 8 // w
    return (digits[i // per_byte] >> (8 - w * (i % per_byte + 1))) & ((1 << w) - 1)


def _candidate_ots_key(ident, q, ots_type, sig, message):
    """RFC 8554 Algorithm 4b: the LM-OTS public key Kc that the signature sig (memoryview of the
    LM-OTS signature) implies for message. Returns (Kc, SHA-256 compressions used)."""
    w, p, ls = _OTS[ots_type]
    top = (1 << w) - 1
    h = hashlib.sha256(ident)
    h.update(q)
    h.update(D_MESG)
    h.update(sig[4:4 + N])                        # C
    h.update(message)
    digits = bytearray(N + 2)                     # Q || Cksm(Q)
    digits[:N] = h.digest()
    cost = _blocks(22 + N + len(message))
    total = 0                                     # Cksm (RFC 8554 4.4)
    for i in range(N * 8 // w):
        total += top - _coef(digits, i, w)
    total <<= ls
    digits[N] = total >> 8
    digits[N + 1] = total & 0xFF
    # chain i: z[i] = hash^(2^w - 1 - a) of y[i]; every step hashes I || q || u16 i || u8 j || tmp
    chain = bytearray(23 + N)
    tmp = memoryview(chain)[23:]
    chain[:16] = ident
    chain[16:20] = q
    kc = hashlib.sha256(ident)
    kc.update(q)
    kc.update(D_PBLC)
    y = 4 + N
    for i in range(p):
        a = _coef(digits, i, w)
        chain[20] = i >> 8
        chain[21] = i & 0xFF
        tmp[:] = sig[y:y + N]
        for j in range(a, top):
            chain[22] = j
            tmp[:] = hashlib.sha256(chain).digest()
        cost += top - a
        kc.update(tmp)
        y += N
    return kc.digest(), cost + _blocks(22 + p * N)


def verify_with_cost(public_key, message, signature):
    """verify(), also returning the SHA-256 compressions it spent: (ok, compressions)."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError("LMS public key must be %d bytes" % PUBLIC_KEY_SIZE)
    lms_type, ots_type = _type_at(public_key, 0), _type_at(public_key, 4)
    if lms_type not in _HEIGHT or ots_type not in _OTS:
        return False, 0
    sig = memoryview(signature)
    # RFC 8554 5.4.2 step 2: the signature's types must be the key's, and its length exact
    if _type_at(sig, 4) != ots_type or len(sig) != signature_size(lms_type, ots_type):
        return False, 0
    ots_end = 4 + ots_signature_size(ots_type)
    if _type_at(sig, ots_end) != lms_type:
        return False, 0
    height = _HEIGHT[lms_type]
    leaf = sig[1] << 16 | sig[2] << 8 | sig[3]   # q, when its top byte is 0 (q < 2^25 always)
    if sig[0] or leaf >> height:                  # q >= 2^h: no such leaf
        return False, 0
    q = bytes(sig[:4])
    ident = bytes(public_key[8:24])
    kc, cost = _candidate_ots_key(ident, q, ots_type, sig[4:ots_end], message)
    # RFC 8554 Algorithm 6a step 4: climb from leaf 2^h + q to the root
    node = (1 << height) + leaf
    h = hashlib.sha256(ident)
    h.update(struct.pack(">I", node))
    h.update(D_LEAF)
    h.update(kc)
    tmp = h.digest()
    path = ots_end + 4
    for _ in range(height):
        sibling = sig[path:path + N]
        odd = node & 1
        node >>= 1
        h = hashlib.sha256(ident)
        h.update(struct.pack(">I", node))
        h.update(D_INTR)
        if odd:      # a right child: the sibling is on the left
            h.update(sibling)
            h.update(tmp)
        else:
            h.update(tmp)
            h.update(sibling)
        tmp = h.digest()
        path += N
    cost += 1 + 2 * height
    return tmp == bytes(public_key[24:]), cost


def verify(public_key, message, signature):
    """True if signature is a valid RFC 8554 LMS signature of message under the LMS public key
    public_key (56 bytes: u32 type || u32 otstype || I || T[1]). False for any signature that is
    malformed, of other types than the key, or of the wrong length, and for a key of a type this
    module does not support; ValueError only when public_key is not 56 bytes."""
    return verify_with_cost(public_key, message, signature)[0]


def _lms_signature_length(sig, off):
    # length of the LMS signature starting at sig[off], from its own type fields; 0 if unknown
    ots_type = _type_at(sig, off + 4)
    if ots_type not in _OTS:
        return 0
    lms_type = _type_at(sig, off + 4 + ots_signature_size(ots_type))
    if lms_type not in _HEIGHT:
        return 0
    return signature_size(lms_type, ots_type)


def verify_hss(public_key, message, signature):
    """RFC 8554 section 6.3 HSS verification (public key u32 L || LMS public key; signature
    u32 Nspk || (LMS signature, LMS public key) * Nspk || LMS signature), L = 1..8. Each level's LMS
    signature is checked with verify(). ValueError only when public_key is not 60 bytes."""
    if len(public_key) != HSS_PUBLIC_KEY_SIZE:
        raise ValueError("HSS public key must be %d bytes" % HSS_PUBLIC_KEY_SIZE)
    sig = memoryview(signature)
    levels = _type_at(public_key, 0)
    if not 1 <= levels <= MAX_HSS_LEVELS or _type_at(sig, 0) != levels - 1:
        return False
    key = bytes(public_key[4:])
    off = 4
    for _ in range(levels - 1):
        size = _lms_signature_length(sig, off)
        child = sig[off + size:off + size + PUBLIC_KEY_SIZE]
        if not size or len(child) != PUBLIC_KEY_SIZE or not verify(key, child, sig[off:off + size]):
            return False
        key = bytes(child)
        off += size + PUBLIC_KEY_SIZE
    return verify(key, message, sig[off:])
