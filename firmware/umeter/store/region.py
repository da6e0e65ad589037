"""Regions: an offset + length view of a flash device that is itself a flash device (DESIGN.md 3.1).

A board declares its partitions once; every store then sees only its own region and cannot touch a
byte outside it (bounds are checked here, before the chip is asked). Regions nest.

    r = Region(dev, offset, length)          # both multiples of dev.sector_size
    parts = partitions(dev, [("journal", 256 * 1024), ("state", 64 * 1024), ("ota", None)])
    parts["journal"].read(0, 16)

In a table, size None means "the rest of the device" (at most one entry); a third element gives an
explicit offset (the entries that follow continue after it). Misaligned, overlapping, duplicate or
oversized entries raise ValueError: a bad table is a build bug and must never reach the flash.
"""


class Region:
    def __init__(self, dev, offset, length):
        ss = dev.sector_size
        if offset < 0 or length <= 0 or offset % ss or length % ss:
            raise ValueError("region 0x%x+0x%x is not aligned to %d-byte sectors" % (offset, length, ss))
        if offset + length > dev.size:
            raise ValueError("region 0x%x+0x%x exceeds the %d-byte device" % (offset, length, dev.size))
        self.dev = dev
        self.offset = offset
        self.size = length
        self.sector_size = ss
        self.page_size = dev.page_size

    def __repr__(self):
        return "<Region 0x%x+0x%x>" % (self.offset, self.size)

    def _check(self, addr, n):
        if addr < 0 or n < 0 or addr + n > self.size:
            raise ValueError("address range 0x%x+%d outside the %d-byte region" % (addr, n, self.size))

    def read(self, addr, n):
        self._check(addr, n)
        return self.dev.read(self.offset + addr, n)

    def readinto(self, addr, buf):
        """Read len(buf) bytes into buf; allocation-free when the device supports readinto."""
        self._check(addr, len(buf))
        readinto(self.dev, self.offset + addr, buf)

    def program(self, addr, data):
        self._check(addr, len(data))
        self.dev.program(self.offset + addr, data)

    def erase_sector(self, addr):
        self._check(addr, 1)
        if addr % self.sector_size:
            raise ValueError("erase address 0x%x is not %d-aligned" % (addr, self.sector_size))
        self.dev.erase_sector(self.offset + addr)


def readinto(dev, addr, buf):
    """dev.readinto when the device has it (no allocation), else a plain read copied into buf."""
    f = getattr(dev, "readinto", None)
    if f is not None:
        f(addr, buf)
    else:
        buf[:] = dev.read(addr, len(buf))


def partitions(dev, table):
    """Build {name: Region} from [(name, size) or (name, size, offset), ...]; size None = the rest."""
    ss = dev.sector_size
    fixed = 0
    rest = None
    for entry in table:
        if len(entry) not in (2, 3):
            raise ValueError("partition entry %r is not (name, size[, offset])" % (entry,))
        if entry[1] is None:
            if rest is not None:
                raise ValueError("only one partition may take the rest of the device")
            if len(entry) == 3 or any(len(e) == 3 for e in table):
                raise ValueError("'rest of the device' cannot be combined with explicit offsets")
            rest = entry[0]
        else:
            fixed += entry[1]
    out = {}
    spans = []
    cursor = 0
    for entry in table:
        name, size = entry[0], entry[1]
        if name in out:
            raise ValueError("duplicate partition %r" % name)
        if len(entry) == 3:
            cursor = entry[2]
        if size is None:
            size = dev.size - fixed
            if size <= 0:
                raise ValueError("no room left for partition %r" % name)
        if size <= 0 or cursor % ss or size % ss:
            raise ValueError("partition %r (0x%x+0x%x) is not aligned to %d-byte sectors"
                             % (name, cursor, size, ss))
        for other, start, end in spans:
            if cursor < end and start < cursor + size:
                raise ValueError("partition %r overlaps %r" % (name, other))
        out[name] = Region(dev, cursor, size)  # raises when past the end of the device
        spans.append((name, cursor, cursor + size))
        cursor += size
    return out
