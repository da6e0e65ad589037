"""CRC-32 (IEEE 802.3, the value binascii.crc32 gives) kept in a 4-byte buffer, never in a Python int.

On 32-bit ports any int >= 2**30 is a heap object, so comparing `binascii.crc32(...)` with a stored
value allocates (and raises MemoryError under heap_lock) three times out of four. Here the running
CRC lives in a caller's bytearray(4), little-endian, as it is stored on flash; checks compare bytes.

    acc = bytearray(4)           # CRC of nothing (0)
    crc_update(acc, data, n)     # acc <- CRC of (what acc covered) followed by data[:n]
    acc == stored4               # the check: a bytes comparison
    crc_reset(acc)               # back to the CRC of nothing

On MicroPython crc_update is viper code working on 16-bit halves with a 16-entry nibble table, so
every intermediate is < 2**16 on any word size. On CPython (host tools and tests) it is
binascii.crc32; the MicroPython tests prove both give the same bytes.
"""
import sys
from array import array

import micropython


def _nibble_table():
    """T[i] (i < 16): the reflected CRC-32 register after shifting nibble i through 4 steps of the
    polynomial 0xEDB88320; the low 16 bits at [i], the high 16 bits at [16 + i]."""
    lo = []
    hi = []
    for i in range(16):
        c_lo, c_hi = i, 0
        for _ in range(4):
            carry = c_lo & 1
            c_lo = (c_lo >> 1) | ((c_hi & 1) << 15)
            c_hi >>= 1
            if carry:
                c_lo ^= 0x8320
                c_hi ^= 0xEDB8
        lo.append(c_lo)
        hi.append(c_hi)
    return array("H", lo + hi)


_TABLE = _nibble_table()


@micropython.viper
def crc_update(acc, data, n: int):
    a = ptr8(acc)
    d = ptr8(data)
    t = ptr16(_TABLE)
    lo = (a[0] | (a[1] << 8)) ^ 0xFFFF
    hi = (a[2] | (a[3] << 8)) ^ 0xFFFF
    i = 0
    while i < n:
        lo ^= d[i]
        k = lo & 15
        lo = ((lo >> 4) | ((hi & 15) << 12)) ^ t[k]
        hi = (hi >> 4) ^ t[k + 16]
        k = lo & 15
        lo = ((lo >> 4) | ((hi & 15) << 12)) ^ t[k]
        hi = (hi >> 4) ^ t[k + 16]
        i += 1
    lo ^= 0xFFFF
    hi ^= 0xFFFF
    a[0] = lo
    a[1] = lo >> 8
    a[2] = hi
    a[3] = hi >> 8


def crc_reset(acc):
    acc[0] = acc[1] = acc[2] = acc[3] = 0


def crc_update_plain(acc, data, n):
    """The same result through binascii.crc32 (CPython, and the reference the tests compare with)."""
    import binascii

    c = binascii.crc32(memoryview(data)[:n], int.from_bytes(acc, "little"))
    acc[:] = c.to_bytes(4, "little")


if sys.implementation.name != "micropython":
    # CPython: the viper decorator is a no-op there and ptr8 means nothing.
    crc_update = crc_update_plain  # noqa: F811
