"""State's on-flash layout, revision 2 (STATE.md): constants, and encode/decode of sector headers and
slots in caller buffers. No I/O, nothing allocated on the paths get/put use. CRCs stay in 4-byte
buffers (state_crc), and every integer decoded here is < 2**30 (a small int on 32-bit ports).
"""
from micropython import const

from .errors import StoreError
from .state_crc import crc_reset, crc_update

MAGIC = b"UMST"
VERSION = const(2)          # revision 1 (same magic, byte 4 = 1) is refused, never reinterpreted
MAX_KEY = const(32)
MAX_VALUE = const(1024)
GEN_MAX = const(0x3FFFFFFF)      # generations 1..GEN_MAX: small ints on every port
COUNT_MAX = const(0x3FFFFFFF)    # erase counts saturate here

HDR = const(20)             # one header copy
HDRS = const(40)            # copy A at 0, copy B at 20
DATA0 = const(40)           # entry data starts after the two copies
SLOT = const(16)            # type, key length, value length, data offset, 0xFFFF, data CRC, slot CRC
T_PUT = const(0x50)
T_DEL = const(0x44)


def u16(b, o):
    return b[o] | (b[o + 1] << 8)


def set16(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF


def _u30(b, o):
    """A 4-byte field known to be < 2**30 (callers check b[o + 3] < 0x40 first)."""
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)


def _set30(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF
    b[o + 2] = (v >> 16) & 0xFF
    b[o + 3] = (v >> 24) & 0xFF


def copy4(dst, o, src):
    dst[o] = src[0]
    dst[o + 1] = src[1]
    dst[o + 2] = src[2]
    dst[o + 3] = src[3]


def equal4(a, b, o):
    """a[0:4] == b[o:o + 4], without building a slice."""
    return a[0] == b[o] and a[1] == b[o + 1] and a[2] == b[o + 2] and a[3] == b[o + 3]


def geometry(dev):
    """(sector size, sectors, log2 of the sector size) of a device State can use, else ValueError."""
    ss = dev.sector_size
    n = dev.size // ss
    log2 = 0
    while (1 << log2) < ss:
        log2 += 1
    if (1 << log2) != ss or not 512 <= ss <= 65536:
        raise ValueError("sector size must be a power of two in 512..65536")
    if n < 2 or n > 0xFFFF or dev.size % ss:
        raise ValueError("State needs 2..65535 whole sectors")
    return ss, n, log2


def max_value(ss):
    """Largest value: one key of MAX_KEY bytes and its slot must fit next to the headers."""
    return min(MAX_VALUE, ss - DATA0 - SLOT - MAX_KEY)


# --- sector header --------------------------------------------------------------------------------
def encode_header(hb, log2, n, gen, erases, acc):
    """Both header copies into hb[0:40] (copy B = copy A)."""
    hb[0:4] = MAGIC
    hb[4] = VERSION
    hb[5] = log2
    set16(hb, 6, n)
    _set30(hb, 8, gen)
    _set30(hb, 12, min(erases, COUNT_MAX))
    crc_reset(acc)
    crc_update(acc, hb, 16)
    copy4(hb, 16, acc)
    for i in range(HDR):
        hb[HDR + i] = hb[i]


def first_format_header(hb, log2, n, acc):
    """What the first format writes to sector 0: generation 1, erase count 0 (fully determined by the
    geometry, so a torn copy of it can be recognised: see could_be_torn_program)."""
    encode_header(hb, log2, n, 1, 0, acc)


def decode_copy(hb, o, log2, n, acc):
    """(generation, erases) of the header copy at hb[o:o + 20]; None if it is not a State header (bad
    magic or CRC); StoreError for a State header this code must not use (other revision, geometry)."""
    if hb[o] != 0x55 or hb[o + 1] != 0x4D or hb[o + 2] != 0x53 or hb[o + 3] != 0x54:   # "UMST"
        return None
    crc_reset(acc)
    crc_update(acc, memoryview(hb)[o:o + 16], 16)
    if not equal4(acc, hb, o + 16):
        return None
    if hb[o + 4] != VERSION:
        raise StoreError("State format revision %d image (this firmware reads revision %d): refused, "
                         "left untouched; State.format(dev) wipes it" % (hb[o + 4], VERSION))
    if hb[o + 5] != log2 or u16(hb, o + 6) != n:
        raise StoreError("State was formatted for another geometry")
    if hb[o + 11] >= 0x40 or hb[o + 15] >= 0x40:
        raise StoreError("State header with an out-of-range generation or erase count")
    gen = _u30(hb, o + 8)
    if gen == 0:
        raise StoreError("State header with generation 0")
    return gen, _u30(hb, o + 12)


def decode_header(hb, log2, n, acc):
    """(generation, erases) from the two copies in hb[0:40] (copy A when valid, else copy B), or None
    when neither is a State header. Two valid copies that disagree were not written by State:
    StoreError."""
    a = decode_copy(hb, 0, log2, n, acc)
    b = decode_copy(hb, HDR, log2, n, acc)
    if a is not None and b is not None and a != b:
        raise StoreError("sector header copies disagree")
    return a if a is not None else b


def could_be_torn_program(seen, meant):
    """True when every byte of `seen` is `meant` with only some of its programmed (0) bits taken: what
    a program of `meant` onto erased flash leaves when it is cut at any point (or never started)."""
    for i in range(len(meant)):
        if seen[i] & meant[i] != meant[i]:
            return False
    return True


# --- slot -----------------------------------------------------------------------------------------
def encode_slot(sb, typ, klen, vlen, d, data_crc, acc):
    """The 16-byte slot for an entry at data offset d whose key + value CRC is in data_crc."""
    sb[0] = typ
    sb[1] = klen
    set16(sb, 2, vlen)
    set16(sb, 4, d)
    sb[6] = sb[7] = 0xFF
    copy4(sb, 8, data_crc)
    crc_reset(acc)
    crc_update(acc, sb, 12)
    copy4(sb, 12, acc)


def slot_is_valid(sb, slot_off, vmax, acc):
    """The slot in sb (read from offset slot_off of its sector): CRC, reserved bytes, type, lengths,
    and data lying between the headers and the slot itself."""
    crc_reset(acc)
    crc_update(acc, sb, 12)
    if not equal4(acc, sb, 12) or sb[6] != 0xFF or sb[7] != 0xFF:
        return False
    typ = sb[0]
    klen = sb[1]
    vlen = u16(sb, 2)
    d = u16(sb, 4)
    if typ == T_DEL:
        if vlen:
            return False
    elif typ != T_PUT or vlen > vmax:
        return False
    return 0 < klen <= MAX_KEY and d >= DATA0 and d + klen + vlen <= slot_off


def slot_is_free(sb):
    for i in range(SLOT):
        if sb[i] != 0xFF:
            return False
    return True
