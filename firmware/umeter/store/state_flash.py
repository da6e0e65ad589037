"""State's flash access: page-split programs, range CRCs, blank scans and flash-to-flash copies through
one preallocated scratch buffer, with a count of the bytes read (mount cost, stats)."""
from micropython import const

from .state_crc import crc_update

SCRATCH = const(256)
_FF = b"\xff" * SCRATCH


class Flash:
    def __init__(self, dev):
        self.dev = dev
        self.size = dev.size
        self.page = dev.page_size
        self.bytes_read = 0          # statistic only: every read through this object adds to it
        self._readinto_dev = getattr(dev, "readinto", None)
        self._scratch = bytearray(SCRATCH)
        self._scratch_mv = memoryview(self._scratch)

    def read_into(self, addr, buf):
        """Fill buf from addr; allocation-free when the device has readinto."""
        self.bytes_read += len(buf)
        if self._readinto_dev is not None:
            self._readinto_dev(addr, buf)
        else:
            buf[:] = self.dev.read(addr, len(buf))

    def read(self, addr, n):
        self.bytes_read += n
        return self.dev.read(addr, n)

    def erase(self, addr):
        self.dev.erase_sector(addr)

    def program(self, addr, data):
        """Program data without crossing a page boundary (NOR rule), one page piece at a time."""
        n = len(data)
        if not n:
            return
        page = self.page
        if addr // page == (addr + n - 1) // page:
            self.dev.program(addr, data)
            return
        mv = memoryview(data)
        off = 0
        while off < n:
            k = min(n - off, page - (addr + off) % page)
            self.dev.program(addr + off, mv[off:off + k])
            off += k

    def _chunk(self, k):
        return self._scratch if k == SCRATCH else self._scratch_mv[:k]

    def crc_range(self, addr, n, acc):
        """acc <- CRC of (what acc covered) followed by the n bytes of flash at addr."""
        while n:
            k = min(n, SCRATCH)
            view = self._chunk(k)
            self.read_into(addr, view)
            crc_update(acc, view, k)
            addr += k
            n -= k

    def is_blank(self, addr, n):
        """True when all n bytes at addr are 0xFF; stops reading at the first that is not."""
        off = 0
        while off < n:
            k = min(SCRATCH, n - off)
            view = self._chunk(k)
            self.read_into(addr + off, view)
            if view != _FF[:k]:
                return False
            off += k
        return True

    def last_programmed(self, addr, n):
        """Offset from addr of the last byte in [addr, addr + n) that is not 0xFF, or -1."""
        last = -1
        off = 0
        while off < n:
            k = min(SCRATCH, n - off)
            view = self._chunk(k)
            self.read_into(addr + off, view)
            if view != _FF[:k]:
                for i in range(k - 1, -1, -1):
                    if view[i] != 0xFF:
                        last = off + i
                        break
            off += k
        return last

    def copy(self, src, dst, n, acc):
        """Copy n bytes of flash from src to dst; acc <- CRC of what acc covered + the bytes read."""
        page = self.page
        while n:
            k = min(n, SCRATCH, page - dst % page)
            view = self._chunk(k)
            self.read_into(src, view)
            crc_update(acc, view, k)
            self.dev.program(dst, view)
            src += k
            dst += k
            n -= k
