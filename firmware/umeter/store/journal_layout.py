"""Journal revision 3: the on-flash layout (JOURNAL.md 1), encode and check only, no I/O.

Every function works on caller-owned buffers and returns small ints, so nothing here allocates or
makes an int >= 2**30 (the 32-bit ports' small-int limit): 48-bit seqs travel as two 24-bit halves
(hi, lo) and CRC-32 values live in 4-byte buffers, computed by a viper routine on MicroPython.
"""
import sys

import micropython
from micropython import const

FORMAT = const(0x4C)            # byte 0 of a sector header: layout revision 3
REV2_FORMAT = const(0x4B)       # revision 2: refused at mount, never misread
MAGIC = b"\x4cUMJ"              # header bytes 0-3: format byte + "UMJ"
HDR_LEN = const(14)             # format(1) magic(3) base(6) crc(4)
AREA0 = const(16)               # records start here; bytes 14-15 stay 0xFF
TRAILER = const(32)             # backup header (14) + 2 x 0xFF + vouch counter (16) at the sector end
VOUCH_LEN = const(16)           # unary counter: 128 bits
VOUCH_MAX = const(128)
UNIT = const(16)                # records start on 16-byte boundaries; seq = base + unit index
REC_HDR = const(8)              # length(2) rel(2) hcrc(4)
REC_CRC = const(4)              # pcrc after the payload
HALF = const(1 << 24)           # seqs are 48-bit: hi * HALF + lo, both < 2**24
HALF_MASK = const(0xFFFFFF)

_MP = sys.implementation.name == "micropython"


def area_end(ss):
    return ss - TRAILER


def max_slots(ss):
    """Record units per sector: every seq a sector can hold is below its base + max_slots(ss)."""
    return (ss - TRAILER - AREA0) // UNIT


def max_payload(ss):
    n = area_end(ss) - AREA0 - REC_HDR - REC_CRC
    return n if n < 0xFFFF else 0xFFFF


def extent(n):
    """Flash bytes a record of n payload bytes occupies (header, payload, crc, padding to UNIT)."""
    return (REC_HDR + n + REC_CRC + UNIT - 1) & ~(UNIT - 1)


# --- CRC-32 (zlib's) into a 4-byte little-endian state buffer ------------------------------------------
if _MP:
    from array import array

    _TABLE = array("I", [0] * 256)
    for _i in range(256):
        _c = _i
        for _k in range(8):
            _c = (_c >> 1) ^ 0xEDB88320 if _c & 1 else _c >> 1
        _TABLE[_i] = _c

    @micropython.viper
    def _crc_v(tab, state, data, off: int, n: int):
        t = ptr32(tab)
        s = ptr8(state)
        d = ptr8(data)
        m = (uint(0xFFFF) << 16) | uint(0xFFFF)  # noqa: F821 (viper cast)
        c = (uint(s[0]) | (uint(s[1]) << 8) | (uint(s[2]) << 16) | (uint(s[3]) << 24)) ^ m  # noqa: F821
        i = off
        e = off + n
        while i < e:
            c = uint(t[(c ^ uint(d[i])) & 0xFF]) ^ (c >> 8)  # noqa: F821
            i += 1
        c = c ^ m
        s[0] = c & 0xFF
        s[1] = (c >> 8) & 0xFF
        s[2] = (c >> 16) & 0xFF
        s[3] = (c >> 24) & 0xFF

    def crc_update(state, data, off, n):
        """state (4 bytes, LE) = crc32(data[off:off+n], state): no allocation, no big int."""
        _crc_v(_TABLE, state, data, off, n)

    @micropython.viper
    def copy(dst, doff: int, src, soff: int, n: int):
        """dst[doff:doff+n] = src[soff:soff+n] without slicing (slices allocate)."""
        d = ptr8(dst)
        s = ptr8(src)
        i = 0
        while i < n:
            d[doff + i] = s[soff + i]
            i += 1
else:
    from binascii import crc32 as _crc32

    def crc_update(state, data, off, n):
        c = _crc32(memoryview(data)[off:off + n], int.from_bytes(bytes(state), "little"))
        state[:] = c.to_bytes(4, "little")

    def copy(dst, doff, src, soff, n):
        dst[doff:doff + n] = memoryview(src)[soff:soff + n]


def crc_clear(state):
    state[0] = state[1] = state[2] = state[3] = 0


def eq4(a, ai, b, bi):
    return a[ai] == b[bi] and a[ai + 1] == b[bi + 1] and a[ai + 2] == b[bi + 2] and a[ai + 3] == b[bi + 3]


# --- 48-bit seqs in halves ---------------------------------------------------------------------------------
def put_seq(buf, at, hi, lo):
    buf[at] = lo & 0xFF
    buf[at + 1] = (lo >> 8) & 0xFF
    buf[at + 2] = lo >> 16
    buf[at + 3] = hi & 0xFF
    buf[at + 4] = (hi >> 8) & 0xFF
    buf[at + 5] = hi >> 16


def get_hi(buf, at):
    return buf[at + 3] | (buf[at + 4] << 8) | (buf[at + 5] << 16)


def get_lo(buf, at):
    return buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16)


_SEQ6 = bytearray(6)


def seq_int(hi, lo):
    """The seq as one Python int: only at the API edge. Above 2**30 it is a heap int on 32-bit ports,
    made in one step (an arithmetic hi * HALF + lo would make two)."""
    if hi < 64:
        return (hi << 24) | lo
    put_seq(_SEQ6, 0, hi, lo)
    return int.from_bytes(_SEQ6, "little")


def split_hi(seq):
    return seq >> 24


def split_lo(seq):
    return seq & HALF_MASK


# --- sector header (JOURNAL.md 1.1) ------------------------------------------------------------------------
def encode_header(buf, hi, lo, state):
    """buf[0:14] = format, magic, base, crc."""
    for k in range(4):
        buf[k] = MAGIC[k]
    put_seq(buf, 4, hi, lo)
    crc_clear(state)
    crc_update(state, buf, 0, 10)
    for k in range(4):
        buf[10 + k] = state[k]


def header_ok(buf, state):
    """True when buf[0:14] is a valid revision-3 header (magic and CRC)."""
    if buf[0] != FORMAT or buf[1] != MAGIC[1] or buf[2] != MAGIC[2] or buf[3] != MAGIC[3]:
        return False
    crc_clear(state)
    crc_update(state, buf, 0, 10)
    return eq4(state, 0, buf, 10)


def has_magic(buf):
    return buf[0] == FORMAT and buf[1] == MAGIC[1] and buf[2] == MAGIC[2] and buf[3] == MAGIC[3]


def rev2_header(buf, state):
    """A revision-2 header: format 0x4B, CRC-32 of bytes 0-10 at 11-14 (needs 15 bytes of buf)."""
    if buf[0] != REV2_FORMAT:
        return False
    crc_clear(state)
    crc_update(state, buf, 0, 11)
    return eq4(state, 0, buf, 11)


def count_bytes(buf, n, value):
    c = 0
    for k in range(n):
        if buf[k] == value:
            c += 1
    return c


def zero_bits(buf, n):
    """Vouch counter: the number of 0 bits in buf[0:n]."""
    z = 0
    for k in range(n):
        b = buf[k]
        if b != 0xFF:
            for i in range(8):
                if not (b >> i) & 1:
                    z += 1
    return z


def vouch_bytes(buf, k):
    """buf[0:VOUCH_LEN] = a counter of k zero bits, lowest bits first."""
    for i in range(VOUCH_LEN):
        z = k - 8 * i
        buf[i] = 0xFF if z <= 0 else (0 if z >= 8 else (0xFF << z) & 0xFF)


# --- record (JOURNAL.md 1.3) -------------------------------------------------------------------------------
def seq_prefix(pre, hi, lo, rec):
    """pre[0:10] = seq (6) + record header bytes 0-3: what both record CRCs start with."""
    put_seq(pre, 0, hi, lo)
    pre[6] = rec[0]
    pre[7] = rec[1]
    pre[8] = rec[2]
    pre[9] = rec[3]


def encode_record_header(rec, n, rel, pre, hi, lo, state):
    """rec[0:8] for an n-byte payload with seq (hi, lo) = base + rel; leaves state = its hcrc."""
    rec[0] = n & 0xFF
    rec[1] = n >> 8
    rec[2] = rel & 0xFF
    rec[3] = rel >> 8
    seq_prefix(pre, hi, lo, rec)
    crc_clear(state)
    crc_update(state, pre, 0, 10)
    for k in range(4):
        rec[4 + k] = state[k]


def record_fields(rec, pre, base_hi, base_lo, unit, state, limit):
    """(n << 16) | rel of the record header rec[0:8] at unit index `unit` of a sector whose base is
    (base_hi, base_lo), or -1 when it does not check (length out of 1..limit, rel above the unit,
    hcrc). Leaves state = the hcrc, ready to continue with the payload."""
    n = rec[0] | (rec[1] << 8)
    if n < 1 or n > limit:
        return -1
    rel = rec[2] | (rec[3] << 8)
    if rel > unit:
        return -1
    lo = base_lo + rel
    hi = base_hi + (lo >> 24)
    if hi >= HALF:
        return -1                       # past 2**48: no record carries such a seq
    seq_prefix(pre, hi, lo & HALF_MASK, rec)
    crc_clear(state)
    crc_update(state, pre, 0, 10)
    if not eq4(state, 0, rec, 4):
        return -1
    return (n << 16) | rel
