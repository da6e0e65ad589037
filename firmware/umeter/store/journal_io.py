"""Journal revision 3: flash access through fixed buffers (reads counted, no allocation after warm-up).

FlashIO wraps a device of DESIGN.md 3.1. Every read lands in a preallocated buffer; programs of n
bytes go through a cached memoryview of exactly n bytes of the staging buffer (made once per length:
slicing per call would allocate). probe() classifies the record at one 16-byte unit and returns a
small int code, never state in attributes.
"""
from . import journal_layout as L

BLANK = 0           # probe(): the 8 header bytes are all 0xFF
BAD = -1            # probe(): the header does not check (torn, rotted, or not a record)
# probe() > 0: (n << 16) | rel of a valid record; < -1: header good, payload bad, -2 - (n << 16 | rel)


class FlashIO:
    def __init__(self, dev):
        self.dev = dev
        self.ss = dev.sector_size
        self.end = L.area_end(self.ss)
        page = dev.page_size if dev.page_size <= self.ss else self.ss
        self.page = page
        self.buf = bytearray(page)
        self.bufv = memoryview(self.buf)
        self.ff = b"\xff" * page
        self._views = [None] * (page + 1)
        self.rec = bytearray(L.REC_HDR)
        self.pre = bytearray(10)
        self.pre1 = memoryview(self.pre)[:1]
        self.state = bytearray(4)
        self.hdr = bytearray(16)
        self.hdrv = memoryview(self.hdr)
        self.hdr14 = self.hdrv[:L.HDR_LEN]
        self.chk = bytearray(L.VOUCH_LEN)
        self.chkv = memoryview(self.chk)
        self.chk4 = self.chkv[:4]
        self.chk8 = self.chkv[:L.REC_HDR]
        self.chk14 = self.chkv[:L.HDR_LEN]
        self.zero4 = b"\x00" * 4
        self.crc4 = bytearray(4)
        self._readinto = getattr(dev, "readinto", None)
        self.reads = 0

    def view(self, n):
        """A memoryview of the first n bytes of the staging buffer (1 <= n <= page)."""
        v = self._views[n]
        if v is None:
            v = self._views[n] = self.bufv[:n]
        return v

    def readinto(self, addr, mv):
        self.reads += len(mv)
        if self._readinto is not None:
            self._readinto(addr, mv)
        else:
            mv[:] = self.dev.read(addr, len(mv))

    def read(self, addr, n):
        self.reads += n
        return self.dev.read(addr, n)

    def program(self, addr, mv):
        self.dev.program(addr, mv)

    def read_header(self, addr):
        """hdr[0:14] = the 14 header bytes at addr."""
        self.readinto(addr, self.hdr14)

    def blank(self, addr, n):
        """True when n bytes from addr read 0xFF."""
        while n > 0:
            k = n if n < self.page else self.page
            v = self.view(k)
            self.readinto(addr, v)
            if k == self.page:
                if self.buf != self.ff:
                    return False
            elif L.count_bytes(self.buf, k, 0xFF) != k:
                return False
            addr += k
            n -= k
        return True

    def last_used(self, sec_addr, lo_off, hi_off):
        """Offset just past the last non-0xFF byte in [lo_off, hi_off) of a sector (lo_off if none)."""
        buf = self.buf
        end = hi_off
        while end > lo_off:
            start = end - self.page if end - self.page > lo_off else lo_off
            self.readinto(sec_addr + start, self.view(end - start))
            k = end - start - 1
            while k >= 0:
                if buf[k] != 0xFF:
                    return start + k + 1
                k -= 1
            end = start
        return lo_off

    def crc_flash(self, addr, n):
        """Continue self.state with n bytes of flash from addr (chunked through the staging buffer)."""
        while n > 0:
            k = n if n < self.page else self.page
            self.readinto(addr, self.view(k))
            L.crc_update(self.state, self.buf, 0, k)
            addr += k
            n -= k

    def header(self, sec_addr, off, base_hi, base_lo, limit):
        """The record header at unit offset off of the sector at sec_addr (base (base_hi, base_lo)):
        (n << 16) | rel for a good one (payload length n, seq = base + rel), BLANK or BAD. Leaves
        self.rec = the header, self.state = its hcrc."""
        rec = self.rec
        self.readinto(sec_addr + off, rec)
        if L.count_bytes(rec, L.REC_HDR, 0xFF) == L.REC_HDR:
            return BLANK
        if base_hi >= L.HALF:
            return BAD
        room = self.end - off - L.REC_HDR - L.REC_CRC
        r = L.record_fields(rec, self.pre, base_hi, base_lo, (off - L.AREA0) >> 4, self.state,
                            limit if limit < room else room)
        return r if r > 0 else BAD

    def probe(self, sec_addr, off, base_hi, base_lo, limit):
        """header(), then the payload CRC: (n << 16) | rel when valid, -2 - that when only the header
        is good, BLANK or BAD."""
        r = self.header(sec_addr, off, base_hi, base_lo, limit)
        if r <= 0:
            return r
        n = r >> 16
        a = sec_addr + off + L.REC_HDR
        self.crc_flash(a, n)
        self.readinto(a + n, self.crc4)
        if L.eq4(self.state, 0, self.crc4, 0):
            return r
        return -2 - r

    def payload(self, sec_addr, off, n):
        """The payload of the record whose header() was just read (a fresh bytes object, the caller keeps
        it), or None when it fails its pcrc."""
        p = self.read(sec_addr + off + L.REC_HDR, n)
        L.copy(self.state, 0, self.rec, 4, 4)       # hcrc = the CRC state after the prefix
        L.crc_update(self.state, p, 0, n)
        self.readinto(sec_addr + off + L.REC_HDR + n, self.crc4)
        return p if L.eq4(self.state, 0, self.crc4, 0) else None

    def vouch_count(self, sec_addr):
        self.readinto(sec_addr + self.ss - L.VOUCH_LEN, self.chkv)
        return L.zero_bits(self.chk, L.VOUCH_LEN)
