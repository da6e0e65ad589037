"""Journal revision 3: mount (JOURNAL.md 3). Reads only, never programs or erases.

mount(io, n) classifies every sector from its first 14 bytes, finds the head (the largest base),
computes where appends resume and the floor of unused seqs, and returns a Mounted (one object,
built once). StoreError for a device that is not a revision-3 journal.
"""
from . import journal_io as IO
from . import journal_layout as L
from .errors import StoreError

# sector kinds (RAM only, one byte per sector)
K_BLANK = 0         # header bytes all 0xFF: checked blank (and erased if need be) before use
K_LIVE = 1          # valid header (primary or backup copy)
K_RETIRED = 2       # header zeroed: worn out, never used again
K_DAMAGED = 3       # journal magic but no valid copy of the header: unreadable, recycled in turn
K_DIRTY = 4         # being recycled (the head's successor after a cut): erased before use


class Mounted:
    def __init__(self, kinds):
        self.kinds = kinds
        self.head = -1
        self.base_hi = self.base_lo = 0     # the head's base
        self.ap = L.AREA0                   # where the next record goes in the head
        self.next_units = 0                 # next seq = base + next_units
        self.vouch = 0                      # the head's vouch counter
        self.head_records = 0
        self.last_sec = -1                  # sector of the newest valid record (-1: none), and its seq
        self.last_hi = self.last_lo = 0
        self.corrupt = 0


def _classify(io, addr):
    """Kind of the sector at addr; for K_LIVE its header (primary or backup) is left in io.hdr."""
    h = io.hdr
    io.read_header(addr)
    if L.count_bytes(h, L.HDR_LEN, 0xFF) == L.HDR_LEN:
        return K_BLANK
    if L.count_bytes(h, L.HDR_LEN, 0x00) >= 12:
        return K_RETIRED
    if L.header_ok(h, io.state):
        return K_LIVE
    if h[0] == L.REV2_FORMAT:
        io.readinto(addr + L.HDR_LEN, io.hdrv[L.HDR_LEN:L.HDR_LEN + 1])
        if L.rev2_header(h, io.state):
            raise StoreError("revision 2 journal image (format byte 0x4B): refused, left untouched; "
                             "Journal.format(dev) wipes it")
    magic = L.has_magic(h)
    io.read_header(addr + io.ss - L.TRAILER)
    if L.header_ok(h, io.state):
        return K_LIVE
    if magic or L.has_magic(h):
        return K_DAMAGED
    return K_DIRTY


def _first_header_torn(io):
    """Sector 0 holds only a torn copy of the very first header (base 1): a cut during the first open."""
    want = bytearray(16)
    L.encode_header(want, 0, 1, io.state)
    ss = io.ss
    for at in (0, ss - L.TRAILER):
        io.read_header(at)
        for k in range(L.HDR_LEN):
            if io.hdr[k] & want[k] != want[k]:
                return False
    return (io.blank(L.HDR_LEN, ss - L.TRAILER - L.HDR_LEN)
            and io.blank(ss - L.TRAILER + L.HDR_LEN, L.TRAILER - L.HDR_LEN))


def _empty(io, n, kinds):
    """No valid header anywhere: an empty journal only if the device is blank (a torn first header
    allowed); anything else is foreign. Reads the whole device, once, on a blank chip."""
    ss = io.ss
    for i in range(n):
        if kinds[i] == K_BLANK and io.blank(i * ss, ss):
            continue
        if i == 0 and _first_header_torn(io):
            kinds[0] = K_DIRTY
            continue
        raise StoreError("not a journal: sector %d holds foreign data (left untouched)" % i)


def successor(kinds, n, sec):
    """The first sector after sec in ring order that is not retired (-1 if none but sec)."""
    for k in range(1, n):
        i = (sec + k) % n
        if kinds[i] != K_RETIRED:
            return i
    return -1


def predecessor(kinds, n, sec):
    for k in range(1, n):
        i = (sec - k) % n
        if kinds[i] != K_RETIRED:
            return i
    return -1


def _torn_drop(kinds, n, head, sec):
    """sec lies between the head and the oldest live sector (nothing live on the way from the head) and
    only dirty, damaged or retired sectors separate it from a live one: a sector a cut caught while
    drop_oldest unmade or erased it (JOURNAL.md 6.1). In doubt like the head's successor: never read,
    erased before use. Foreign data anywhere else still refuses the device."""
    i = head
    for _ in range(n - 1):
        i = (i + 1) % n
        if i == sec:
            break
        if kinds[i] == K_LIVE:
            return False
    if i != sec:
        return False
    for _ in range(n - 1):
        i = (i + 1) % n
        k = kinds[i]
        if k == K_LIVE:
            return True
        if k != K_DIRTY and k != K_DAMAGED and k != K_RETIRED:
            return False
    return False


def scan(io, sec, hi, lo, stop, limit):
    """Walk the records of one sector (base (hi, lo)) that start before offset stop. Returns (valid
    count, rel + 1 of the newest valid record or 0, damaged runs, rel + 1 of the first record with a
    good header or 0, offset past the extent of the last record with a good header, rel + 1 of that
    record or 0). Same rules as records() (JOURNAL.md 4)."""
    addr = sec * io.ss
    off = L.AREA0
    count = newest = bad = first = last = 0
    reach = L.AREA0
    in_bad = False
    while off + L.UNIT <= stop:
        r = io.probe(addr, off, hi, lo, limit)
        if r > 0 or r < IO.BAD:
            f = r if r > 0 else -2 - r
            rel = f & 0xFFFF
            if not first:
                first = rel + 1
            if rel + 1 > last:
                last = rel + 1
            reach = off + L.extent(f >> 16)
            if r > 0:
                count += 1
                newest = rel + 1
                in_bad = False
                off = reach
                continue
        if r != IO.BLANK and not in_bad:
            bad += 1
            in_bad = True
        off += L.UNIT
    return count, newest, bad, first, reach, last


def mount(io, n, limit):
    ss = io.ss
    kinds = bytearray(n)
    m = Mounted(kinds)
    head = -1
    hh = hl = -1
    tie = False
    for i in range(n):
        k = _classify(io, i * ss)
        kinds[i] = k
        if k == K_LIVE:
            bh = L.get_hi(io.hdr, 4)
            bl = L.get_lo(io.hdr, 4)
            if bh > hh or (bh == hh and bl > hl):
                head, hh, hl, tie = i, bh, bl, False
            elif bh == hh and bl == hl:
                tie = True
    if head < 0:
        _empty(io, n, kinds)
        return m
    m.head, m.base_hi, m.base_lo = head, hh, hl
    ms = L.max_slots(ss)
    hv = io.vouch_count(head * ss)
    m.vouch = hv
    nxt = successor(kinds, n, head)
    floor = 0
    if hv:
        floor = hv * ms                 # the head vouched for its successor's seqs (JOURNAL.md 5)
    if nxt >= 0:
        sk = kinds[nxt]
        if sk == K_DAMAGED or sk == K_DIRTY:
            # maybe a sector the head opened whose headers are unreadable: everything it could hold
            floor = max(floor, ms) + ms
        if hv or sk == K_DAMAGED or sk == K_DIRTY:
            kinds[nxt] = K_DIRTY        # in doubt: never read, erased before use
    if tie:
        floor = max(floor, ms)
    for i in range(n):
        if kinds[i] == K_DIRTY and i != nxt and not _torn_drop(kinds, n, head, i):
            raise StoreError("not a journal: sector %d is neither journal nor blank (left untouched)" % i)
    e = io.last_used(head * ss, L.AREA0, io.end)
    e16 = (e + L.UNIT - 1) & ~(L.UNIT - 1)
    count, newest, bad, _, reach, last = scan(io, head, hh, hl, e16, limit)
    # a record's last bytes may read 0xFF (a pcrc byte, say): they are still its own
    ap = reach if reach > e16 else e16
    m.ap = ap
    m.head_records, m.corrupt = count, bad
    # seqs go on from the last record with a good header; bytes after it (a torn header) may have
    # used the next one, and any seq there is below base + the unit index (JOURNAL.md 3.2)
    units = last if e16 <= reach else (ap - L.AREA0) >> 4
    m.next_units = floor if floor > units else units
    if newest:
        _set_last(m, head, hh, hl, newest - 1)
        return m
    sec = head
    for _ in range(n - 1):              # the newest record is in an older sector: walk back to it
        sec = predecessor(kinds, n, sec)
        if sec < 0 or sec == head or kinds[sec] != K_LIVE:
            break
        io.read_header(sec * ss)
        if not L.header_ok(io.hdr, io.state):
            io.read_header(sec * ss + ss - L.TRAILER)
        bh, bl = L.get_hi(io.hdr, 4), L.get_lo(io.hdr, 4)
        c, newest, _, _, _, _ = scan(io, sec, bh, bl, io.end, limit)
        if newest:
            _set_last(m, sec, bh, bl, newest - 1)
            break
    return m


def _set_last(m, sec, hi, lo, unit):
    lo += unit
    m.last_sec, m.last_hi, m.last_lo = sec, hi + (lo >> 24), lo & L.HALF_MASK
