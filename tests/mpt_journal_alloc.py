# Journal revision 3: append allocates nothing per record on both lanes (31-bit small ints on mp32),
# proven with heap_lock() over appends after warm-up, sector opens and ring wraps included.
import gc

import micropython
from umeter.store import Journal
from umeter.store import journal_layout as L

SS = 4096


class RamFlash:
    """A flash device that never allocates, so what is measured is the journal's own allocation."""

    def __init__(self, sectors):
        self.size = sectors * SS
        self.sector_size = SS
        self.page_size = 256
        self.m = bytearray(b"\xff" * self.size)

    def read(self, a, n):
        return bytes(self.m[a:a + n])

    def readinto(self, a, buf):
        m = self.m
        for i in range(len(buf)):
            buf[i] = m[a + i]

    def program(self, a, d):
        m = self.m
        for i in range(len(d)):
            m[a + i] &= d[i]

    def erase_sector(self, a):
        m = self.m
        for i in range(a, a + SS):
            m[i] = 0xFF


def _payloads():
    return [bytes(range(16)), bytes(64), b"\x01", bytes(1000)]


def test_append_under_heap_lock_including_opens_and_wraps():
    j = Journal(RamFlash(4))
    ps = _payloads()
    for k in range(120):                 # warm-up: every size, page split and a few sector opens
        j.append(ps[k % 4])
    gc.collect()
    micropython.heap_lock()
    try:
        last = 0
        for k in range(200):             # 200 appends: about 4 sector opens with erases (ring wraps)
            s = j.append(ps[k % 4])
            assert s > last
            last = s
    finally:
        micropython.heap_unlock()
    got = list(Journal(j.dev).records())
    assert got[-1][0] == last and got[-1][1] == ps[199 % 4]


def test_big_seqs_cost_only_the_returned_int():
    # a head whose base is above 2**40: the journal works in 24-bit halves, so an append allocates at
    # most the int it returns (a heap int on 32-bit ports, none on 64-bit)
    dev = RamFlash(4)
    h = bytearray(16)
    st = bytearray(4)
    base = (1 << 40) + 5
    L.encode_header(h, base >> 24, base & 0xFFFFFF, st)
    dev.program(SS, bytes(h[:14]))
    j = Journal(dev)
    assert j.next_seq == base
    p = bytes(64)
    for _ in range(40):                  # warm-up: every page split of an 80-byte record (16 of them)
        j.append(p)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(40):
        j.append(p)
    per = (gc.mem_alloc() - before) // 40
    gc.enable()
    assert per <= 32, per
    assert list(Journal(dev).records())[-1][0] == j.last_seq > base


def _mount_alloc(records):
    dev = RamFlash(8)
    j = Journal(dev)
    for k in range(records):
        j.append(bytes(64))
    gc.collect()
    before = gc.mem_alloc()
    j2 = Journal(dev)
    return gc.mem_alloc() - before, j2


def test_mount_and_walk_allocation_bounded():
    # mount allocates its fixed buffers (one byte per sector, page buffers, views), nothing per record
    few, _ = _mount_alloc(10)
    many, j = _mount_alloc(300)
    assert many <= few + 512 and many < 8000, (few, many)   # 30x the records, the same buffers
    gc.collect()
    before = gc.mem_alloc()
    n = 0
    for s, p in j.records():
        n += 1
    per = (gc.mem_alloc() - before) // n
    assert per < 400, per       # the payload (read by the test device: a slice and a copy) and tuples
